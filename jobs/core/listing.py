"""The one file lister of the stages: input patterns (files, globs, directories on any store) to sorted
URLs, and the one k-of-N slicer that backfill subsets and training workers share."""

from __future__ import annotations

import urllib.parse

import fsspec

from jobs.core.errors import BadInputError
from jobs.core.storage import check_complete, check_regular_files, filesystem, is_local
from jobs.core.store_probe import probe_store, store_errors

GLOB_CHARS = set("*?[")


def every_nth(files: list[str], k: int, n: int) -> list[str]:
    """Part k of n: every n-th file of the sorted list from index k, so that the n parts are disjoint,
    together cover the files and differ in size by at most one."""
    return sorted(files)[k::n]


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, template: str) -> str:
    """Give a path found by fs.glob back the protocol of the URL it came from."""
    if is_local(template):
        return path
    return fs.unstrip_protocol(path)


def expand_inputs(patterns: list[str], suffix: str | None = None, missing_ok: bool = False) -> list[str]:
    """Sorted, de-duplicated URLs for files, globs or directories (whose files ending in `suffix` are
    taken); a pattern that matches nothing is an error, except that with `missing_ok` a plain path
    that does not exist is kept, for the reader to report (and a skip policy to list) as a bad file."""
    out: list[str] = []
    stores: dict[tuple[str, str], str] = {}
    for pattern in patterns:
        stores.setdefault(urllib.parse.urlsplit(pattern)[:2], pattern)
    for first in stores.values():  # once per store (bucket), named by its first pattern
        probe_store(first)
    for pattern in patterns:
        with store_errors(pattern):
            out.extend(_expand(pattern, suffix, missing_ok))
    return check_regular_files(list(dict.fromkeys(out)))


def _expand(pattern: str, suffix: str | None, missing_ok: bool) -> list[str]:
    fs, path = filesystem(pattern)
    if GLOB_CHARS & set(path):
        matches = sorted(p for p in fs.glob(path) if not fs.isdir(p))  # a FIFO is named, not skipped
        if not matches:
            raise BadInputError(pattern, "the glob matches no file")
        return [_unstrip(fs, p, pattern) for p in matches]
    if fs.isdir(path):
        check_complete(pattern)
        matches = sorted(p for p in fs.find(path) if suffix is None or p.endswith(suffix))
        if not matches:
            raise BadInputError(pattern, f"the directory holds no {suffix or ''} file")
        return [_unstrip(fs, p, pattern) for p in matches]
    if not missing_ok and not fs.exists(path):
        raise BadInputError(pattern, "no such file")
    return [pattern]


def select_subset(files: list[str], subset: str | None) -> list[str]:
    """Files of subset 'k/N': every N-th file of the sorted list from index k, so that the N subsets
    are disjoint and together cover the input (what backfills over dataset subsets rely on)."""
    if not subset or subset == "all":
        return files
    try:
        k, n = (int(x) for x in subset.split("/"))
    except ValueError:
        raise BadInputError("--subset", f"{subset!r} is not of the form k/N") from None
    if n < 1 or not 0 <= k < n:
        raise BadInputError("--subset", f"{subset!r} needs N >= 1 and 0 <= k < N")
    chosen = every_nth(files, k, n)
    if not chosen:
        raise BadInputError("--subset", f"subset {subset} of {len(files)} file(s) is empty")
    return chosen
