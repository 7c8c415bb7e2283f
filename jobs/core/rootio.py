"""Opening ROOT files through the storage layer, with errors that say which file and what is wrong."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import awkward as ak
import uproot

from jobs.core.errors import BadInputError
from jobs.core.storage import IOStats, open_instrumented


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def open_root(url: str, stats: IOStats) -> uproot.ReadOnlyDirectory:
    """Open a ROOT file through the instrumented storage layer; garbage or truncated headers raise
    BadInputError naming the file."""
    handle = open_instrumented(url, stats)
    try:
        return uproot.open(handle)
    except Exception as exc:  # uproot raises several types for garbage input
        handle.close()
        raise BadInputError(url, f"not a readable ROOT file ({_first_line(exc)})") from None


def tree_names(root: uproot.ReadOnlyDirectory) -> list[str]:
    return sorted({k.split(";")[0] for k, c in root.classnames(recursive=False).items() if c == "TTree"})


def open_tree(url: str, tree: str, stats: IOStats) -> uproot.TTree:
    """Open `tree` in the ROOT file at `url`; not-ROOT, truncated or tree-less files raise
    BadInputError. The caller closes the file via ``tree.file.close()``."""
    root = open_root(url, stats)
    try:
        obj = root[tree]
    except Exception:
        keys = sorted({k.split(";")[0] for k in root.keys(recursive=False)})
        root.close()
        raise BadInputError(
            url, f"no tree {tree!r} (the file holds: {', '.join(keys) or 'nothing'})"
        ) from None
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        root.close()
        raise BadInputError(url, f"{tree!r} is a {type(obj).__name__}, not a TTree")
    return obj


def require_branches(url: str, tree: uproot.TTree, branches: Sequence[str]) -> None:
    """Fail with the list of missing branches (and what the tree does hold)."""
    have = set(tree.keys(recursive=True))
    missing = [b for b in branches if b not in have]
    if missing:
        raise BadInputError(
            url,
            f"tree {tree.name!r} lacks branch(es) {', '.join(missing)}; it holds {', '.join(sorted(have))}",
        )


def read_arrays(url: str, tree: uproot.TTree, branches: Sequence[str], start: int, stop: int) -> ak.Array:
    """Read an entry range; decompression or truncation errors become BadInputError for `url`."""
    try:
        return tree.arrays(list(branches), entry_start=start, entry_stop=stop, library="ak")
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(
            url, f"cannot read entries {start}-{stop} ({_first_line(exc)}); truncated or corrupt?"
        ) from None


def iterate_arrays(
    url: str, tree: uproot.TTree, branches: Sequence[str], start: int, stop: int, step: int
) -> Iterator[tuple[int, ak.Array]]:
    """(first entry, arrays) of consecutive `step`-entry batches of [start, stop). Unlike repeated
    read_arrays calls, a basket spanning several batches is read and decompressed once. Errors become
    BadInputError for `url`, as in read_arrays."""
    first = start
    try:
        for arrays in tree.iterate(
            list(branches), entry_start=start, entry_stop=stop, step_size=step, library="ak"
        ):
            yield first, arrays
            first += len(arrays)
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(
            url, f"cannot read entries {first}-{stop} ({_first_line(exc)}); truncated or corrupt?"
        ) from None


@dataclass(frozen=True)
class Chunk:
    """One Spark task's work: an entry range of one tree in one file."""

    url: str
    tree: str
    start: int
    stop: int

    @property
    def entries(self) -> int:
        return self.stop - self.start


def split_entries(url: str, tree: str, num_entries: int, chunk_entries: int) -> list[Chunk]:
    """Equal entry ranges of at most `chunk_entries` covering [0, num_entries)."""
    if chunk_entries < 1:
        raise BadInputError("--chunk-entries", f"must be >= 1, got {chunk_entries}")
    return [
        Chunk(url, tree, s, min(s + chunk_entries, num_entries)) for s in range(0, num_entries, chunk_entries)
    ]
