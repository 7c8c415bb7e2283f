"""Opening ROOT files through the storage layer, with errors that say which file and what is wrong.

An event table is a TTree or an RNTuple (the format CMS is moving NanoAOD to): which one it is is
decided here and nowhere else. Both are read by branch (field) name and entry range, and the arrays
come back with the requested names as fields, so the stages never see the difference.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import awkward as ak
import uproot
import uproot.source.fsspec

from jobs.core.errors import BadInputError, first_line
from jobs.core.metering import IOStats, MeteredFileSystem
from jobs.core.storage import filesystem, is_local, storage_options
from jobs.core.store_probe import storage_problem

# ROOT class name -> what the messages call it
TABLE_CLASSES = {"TTree": "TTree", "ROOT::RNTuple": "RNTuple"}
Table: TypeAlias = "uproot.TTree | uproot.behaviors.RNTuple.RNTuple"
LIST_LIMIT = 6  # names shown in a message before "... (N more)"


def listing(names: Iterable[str], limit: int = LIST_LIMIT) -> str:
    """'a, b, c, ... (N more)': a bounded list for a one-line message."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def near_matches(wanted: Iterable[str], have: Iterable[str], n: int = 3) -> list[str]:
    """The names in `have` closest to each wanted name (difflib), without repeats."""
    pool = sorted(set(have))
    out: list[str] = []
    for name in wanted:
        out += [m for m in difflib.get_close_matches(name, pool, n=n, cutoff=0.6) if m not in out]
    return out


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {first_line(exc, 200)}"


def _is_empty(url: str) -> bool:
    try:
        if is_local(url):
            return os.path.getsize(filesystem(url)[1]) == 0
        fs, path = filesystem(url)
        return fs.size(path) == 0
    except OSError:
        return False


class MeteredSource(uproot.source.fsspec.FSSpecSource):
    """uproot's fsspec source (coalesced byte ranges fetched concurrently on fsspec's event loop) with
    its filesystem seen through a MeteredFileSystem, so that every request it makes is counted in
    `io_stats` without changing how it reads."""

    def __init__(self, file_path: str, io_stats: IOStats, **options):
        self._io_stats = io_stats
        super().__init__(file_path, **options)

    def _open(self) -> None:
        super()._open()
        self._fs = MeteredFileSystem(self._fs, self._io_stats)


def open_root(url: str, stats: IOStats) -> uproot.ReadOnlyDirectory:
    """Open a ROOT file through the storage layer (file://, s3://, oci://, root://, ...) with its reads
    counted in `stats`; missing, empty, garbage or truncated files and an unreachable store raise
    BadInputError naming the file."""
    filesystem(url)  # refuses credentials in the URL
    try:
        # {url: None}: the whole string is the file (a port's ':' is not an object path). No array cache:
        # every range is read once, and a closed file's 100 MB cache outlived it (a task's memory grew
        # by ~100 MB per chunk until this; bench.dimuon's memory_growth shows it)
        return uproot.open(
            {url: None}, handler=MeteredSource, io_stats=stats, array_cache=None, **storage_options(url)
        )
    except FileNotFoundError:
        raise BadInputError(url, "no such file") from None
    except Exception as exc:  # uproot raises several types for garbage input
        problem = storage_problem(exc, url)
        if problem:
            raise BadInputError(url, problem) from None
        if _is_empty(url):
            raise BadInputError(url, "empty file (0 bytes)") from None
        raise BadInputError(url, f"not a readable ROOT file ({_first_line(exc)})") from None


def table_names(root: uproot.ReadOnlyDirectory) -> list[str]:
    """The event tables (TTrees and RNTuples) at the top of a file."""
    return sorted(
        {k.split(";")[0] for k, c in root.classnames(recursive=False).items() if c in TABLE_CLASSES}
    )


def _contents(root: uproot.ReadOnlyDirectory) -> str:
    held = {k.split(";")[0]: c for k, c in root.classnames(recursive=False).items()}
    return listing(f"{k} ({c})" for k, c in sorted(held.items())) or "nothing"


def open_table(url: str, name: str, stats: IOStats) -> Table:
    """Open the TTree or RNTuple `name` in the ROOT file at `url`; not-ROOT, truncated or table-less
    files raise BadInputError. The caller closes the file via ``table.file.close()``."""
    root = open_root(url, stats)
    try:
        obj = root[name]
    except Exception:
        held = _contents(root)
        root.close()
        raise BadInputError(url, f"no tree {name!r} (the file holds: {held})") from None
    if not isinstance(obj, uproot.behaviors.TTree.TTree | uproot.behaviors.RNTuple.RNTuple):
        root.close()
        raise BadInputError(url, f"{name!r} is a {type(obj).__name__}, not a TTree or RNTuple")
    return obj


def kind(table: Table) -> str:
    return "RNTuple" if isinstance(table, uproot.behaviors.RNTuple.RNTuple) else "TTree"


def branch_names(table: Table) -> set[str]:
    """Branch (field) names as they are requested: 'Jet.PT' for flat (uproot-written) and split
    TClonesArray ('Jet/Jet.PT') TTree layouts alike, and for the 'PT' subfield of an RNTuple's 'Jet'."""
    return {k.rsplit("/", 1)[-1] for k in table.keys(recursive=True)}


def missing_branches(
    url: str, table: Table, missing: Sequence[str], expected: str | None = None
) -> BadInputError:
    """The error for branches a table lacks: what is missing (whole collections by their name, for
    '<Collection>.<Field>' branches), what was expected, and the file's nearest names (not its whole
    contents, which run to thousands of names)."""
    have = branch_names(table)
    present = {h.split(".", 1)[0] for h in have}
    whole = list(
        dict.fromkeys(m.split(".", 1)[0] for m in missing if "." in m and m.split(".", 1)[0] not in present)
    )
    single = [m for m in missing if m.split(".", 1)[0] not in whole]
    lacks = [
        f"collection(s) {listing(whole)}" if whole else "",
        f"branch(es) {listing(single)}" if single else "",
    ]
    near = near_matches(whole, present) + near_matches(single, have)
    return BadInputError(
        url,
        f"{kind(table)} {table.name!r} lacks {' and '.join(filter(None, lacks))}"
        + (f"; expected {expected}" if expected else "")
        + f"; near matches in the file: {listing(near) or 'none'}",
    )


def require_branches(url: str, table: Table, branches: Sequence[str], expected: str | None = None) -> None:
    """Fail with the missing branches and the file's near matches."""
    have = branch_names(table)
    missing = [b for b in branches if b not in have]
    if missing:
        raise missing_branches(url, table, missing, expected)


def _named(arrays: ak.Array, branches: Sequence[str]) -> ak.Array:
    """The arrays with one field per requested name: a TTree gives them so; an RNTuple gives the
    'PT' subfield of 'Jet' nested, which becomes field 'Jet.PT'."""
    if all(b in arrays.fields for b in branches):
        return arrays
    fields = {b: arrays[b] if b in arrays.fields else arrays[tuple(b.split("."))] for b in branches}
    return ak.zip(fields, depth_limit=1)


def _unreadable(url: str, first: int, stop: int, exc: Exception) -> BadInputError:
    return BadInputError(
        url, f"cannot read entries {first}-{stop} ({_first_line(exc)}); truncated or corrupt?"
    )


def read_arrays(url: str, table: Table, branches: Sequence[str], start: int, stop: int) -> ak.Array:
    """Read an entry range; decompression or truncation errors become BadInputError for `url`."""
    try:
        arrays = table.arrays(list(branches), entry_start=start, entry_stop=stop, library="ak")
    except Exception as exc:
        raise _unreadable(url, start, stop, exc) from None
    return _named(arrays, branches)


@contextlib.contextmanager
def consistent_data(url: str, start: int, stop: int) -> Iterator[None]:
    """Around the physics on arrays read from `url`: an IndexError or ValueError there means arrays
    that do not fit together (garbled bytes in a basket without a checksum, e.g. counts that disagree
    with their collections), a bad file named in one line, which --on-bad-file skip leaves out."""
    try:
        yield
    except (IndexError, ValueError) as exc:
        problem = (
            f"inconsistent data in entries {start}-{stop} ({type(exc).__name__}: {first_line(exc)[:150]})"
        )
        raise BadInputError(url, problem) from None


def iterate_arrays(
    url: str, table: Table, branches: Sequence[str], start: int, stop: int, step: int
) -> Iterator[tuple[int, ak.Array]]:
    """(first entry, arrays) of consecutive `step`-entry batches of [start, stop). Unlike repeated
    read_arrays calls, a basket spanning several batches is read and decompressed once. Errors become
    BadInputError for `url`, as in read_arrays."""
    first = start
    batches = table.iterate(list(branches), entry_start=start, entry_stop=stop, step_size=step, library="ak")
    while True:
        try:
            arrays = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise _unreadable(url, first, stop, exc) from None
        yield first, _named(arrays, branches)
        first += len(arrays)


@dataclass(frozen=True)
class Chunk:
    """One Spark task's work: an entry range of one event table (TTree or RNTuple) in one file."""

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
