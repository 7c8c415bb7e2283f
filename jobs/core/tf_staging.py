"""Object-store inputs and outputs for the TensorFlow stages (jobs.train, jobs.evaluate).

TensorFlow has no s3:// (or oci://, gs://, root://) filesystem (tensorflow-io is unmaintained and
`TFRecordDataset('s3://…')` is `Unimplemented`), so the TF stages never hand an object URL to
TensorFlow. Instead, through the one storage layer (fsspec):
- inputs: each worker copies *only its own shards* into local scratch (`stage_in`) and TensorFlow
  reads local files at full speed, every epoch, with no network in the loop;
- outputs: the stage writes into a local working directory that `OutputMirror` pushes to the output
  URL (after every checkpoint) and pulls back from it (on resume).
Shards are assigned to workers deterministically (`assign_shards`): the sorted file list, every N-th
file from the worker's index; fewer shards than workers is refused (no worker reads everything).
Local paths are not copied: they are used in place, as on a shared disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jobs.core.errors import BadInputError
from jobs.core.listing import GLOB_CHARS, every_nth
from jobs.core.storage import SUCCESS_MARKER, check_complete, check_regular_files, filesystem, is_local
from jobs.core.store_probe import storage_problem

log = logging.getLogger("jobs.core.tf_staging")

# names a push uploads last, so that a reader of the store sees them only after what they point to
POINTERS = ("checkpoint",)
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz")
PARQUET_SUFFIXES = (".parquet",)
FORMAT_SUFFIXES = {"tfrecord": TFRECORD_SUFFIXES, "parquet": PARQUET_SUFFIXES}
PRUNED = "checkpoints/"  # the part of an output a push mirrors exactly (old checkpoints are deleted)


def list_data_files(url: str, suffixes: tuple[str, ...]) -> list[str]:
    """Data files of a directory (recursively, skipping _/. names) or of a glob, sorted."""
    fs, path = filesystem(url)
    if GLOB_CHARS & set(path):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        check_complete(url)  # refuse an object-store output whose commit did not finish
        found = [p for p in fs.find(path) if p.endswith(suffixes)]
    elif fs.isfile(path):
        found = [path]
    else:
        raise BadInputError(url, "no such file or directory")
    found = sorted(p for p in found if not os.path.basename(p).startswith(("_", ".")))
    if not found:
        raise BadInputError(url, f"holds no {' or '.join(suffixes)} file")
    return check_regular_files([p if is_local(url) else fs.unstrip_protocol(p) for p in found])


def format_files(url: str, fmt: str) -> list[str]:
    """The data files of a dataset in format `fmt` (tfrecord or parquet), sorted."""
    return list_data_files(url, FORMAT_SUFFIXES[fmt])


def detect_format(url: str) -> str:
    """The one format detector: 'tfrecord' when the URL holds TFRecord shards, else 'parquet' when it
    holds Parquet files."""
    for fmt in FORMAT_SUFFIXES:
        try:
            format_files(url, fmt)
            return fmt
        except BadInputError:
            continue
    raise BadInputError(url, "holds neither TFRecord shards (.tfrecord[.gz]) nor Parquet files")


def file_format(path: str) -> str:
    """The format of one data file, by its suffix."""
    return "tfrecord" if path.endswith(TFRECORD_SUFFIXES) else "parquet"


def assign_shards(files: list[str], index: int, count: int, source: str) -> list[str]:
    """Worker `index` of `count`: every count-th file of the sorted list from `index`, so the workers'
    parts are disjoint, cover the input and differ in size by at most one shard."""
    if count <= 1:
        return sorted(files)
    if not 0 <= index < count:
        raise ValueError(f"worker index {index} is outside 0..{count - 1}")
    if len(files) < count:
        raise BadInputError(
            source,
            f"{len(files)} shard(s) for {count} workers: each worker reads its own shards, so the input "
            f"needs at least {count} (write more shards or train with fewer workers)",
        )
    return every_nth(files, index, count)


def store_problem(exc: BaseException, url: str) -> str:
    """A one-line description of a failed object-store request (no traceback, no retries): the
    storage layer's wording when it knows the failure (unreachable, no credentials, denied)."""
    known = storage_problem(exc, url)
    if known:
        return known
    if isinstance(exc, FileNotFoundError):
        return "no such file or bucket"
    if isinstance(exc, PermissionError):
        return "access denied (check the credentials)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


@dataclass(frozen=True)
class Staged:
    """Remote files copied under `directory`, each at its path relative to `base` (their common
    prefix URL), so the sorted order, the suffixes and the names in messages are kept."""

    directory: str
    base: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, int | float]:
        return {"files": self.files, "bytes": self.bytes, "seconds": self.seconds}

    def remote_name(self, local: str) -> str:
        """The URL a local path under `directory` stands for (other strings unchanged)."""
        if local == self.directory or local.startswith(self.directory + os.sep):
            return self.base + local[len(self.directory) :].replace(os.sep, "/")
        return local

    @contextlib.contextmanager
    def named_as_remote(self) -> Iterator[None]:
        """Bad-input errors raised on the staged copies name the remote files instead."""
        try:
            yield
        except BadInputError as exc:
            raise BadInputError(self.remote_name(exc.source), exc.problem) from None


def stage_in(files: Iterable[str], directory: str, source: str) -> Staged:
    """Copy remote `files` (URLs of one store) into `directory`; see `Staged`."""
    files = sorted(files)
    if not files:
        raise BadInputError(source, "no file to stage in")
    fs, first = filesystem(files[0])
    paths = [filesystem(f)[1] for f in files]
    base = posixpath.dirname(paths[0]) if len(paths) == 1 else posixpath.commonpath(paths)
    total, t0 = 0, time.perf_counter()
    for url, path in zip(files, paths, strict=True):
        target = os.path.join(directory, *path[len(base) + 1 :].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            fs.get_file(path, target)
        except (OSError, ValueError) as exc:
            raise BadInputError(url, f"cannot be staged in: {store_problem(exc, url)}") from None
        total += os.path.getsize(target)
    seconds = time.perf_counter() - t0
    with open(os.path.join(directory, SUCCESS_MARKER), "w"):  # a complete copy, for check_complete
        pass
    log.info("staged %d file(s), %.1f MB of %s into %s in %.1f s", len(files), total / 1e6, source,
             directory, seconds)  # fmt: skip
    return Staged(directory, fs.unstrip_protocol(base), len(files), total, seconds)


class OutputMirror:
    """A local working directory that stands for an output URL on an object store.

    `pull` brings a part of an earlier output back (the checkpoints to resume from); `push` uploads
    what changed since the last push (size or mtime), pointer files (`checkpoint`) after the data they
    point to, then deletes under `checkpoints/` what the working directory no longer has (checkpoints
    the manager rotated out). Each object is one PUT, so a reader sees an old or a new object, never
    half of one; the pointer-last order keeps the store's latest checkpoint complete at all times."""

    def __init__(self, local_dir: str, url: str):
        self.local_dir = local_dir
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem(self.url)
        self.path = self.path.rstrip("/")
        self._pushed: dict[str, tuple[int, int]] = {}

    def pull(self, sub: str) -> int:
        """Download URL/sub into LOCAL/sub; returns the number of files (0 when there is none)."""
        remote = f"{self.path}/{sub}"
        try:
            self.fs.invalidate_cache(remote)
            found = [p for p in self.fs.find(remote) if not p.endswith("/")]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise BadInputError(self.url, f"cannot be read: {store_problem(exc, self.url)}") from None
        for p in found:
            rel = p[len(self.path) + 1 :]
            target = os.path.join(self.local_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self.fs.get_file(p, target)
            st = os.stat(target)
            self._pushed[rel] = (st.st_size, st.st_mtime_ns)
        return len(found)

    def remove(self, rel: str) -> None:
        """Delete URL/rel if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.path}/{rel}")

    def put_marker(self, rel: str) -> None:
        """An empty object URL/rel (a marker such as _SUCCESS)."""
        self.fs.pipe_file(f"{self.path}/{rel}", b"")

    def push(self) -> None:
        local = {}
        for base, _, names in os.walk(self.local_dir):
            for name in names:
                full = os.path.join(base, name)
                if ".tmp" in name:  # a file being written (write_json, model.save temporaries)
                    continue
                st = os.stat(full)
                rel = os.path.relpath(full, self.local_dir).replace(os.sep, "/")
                local[rel] = (st.st_size, st.st_mtime_ns)
        changed = [rel for rel, sig in local.items() if self._pushed.get(rel) != sig]
        changed.sort(key=lambda rel: os.path.basename(rel) in POINTERS)
        try:
            for rel in changed:
                self.fs.put_file(os.path.join(self.local_dir, rel), f"{self.path}/{rel}")
                self._pushed[rel] = local[rel]
            stale = [rel for rel in self._pushed if rel not in local and rel.startswith(PRUNED)]
            if stale:
                self.fs.rm([f"{self.path}/{rel}" for rel in stale])
        except OSError as exc:
            raise BadInputError(self.url, f"cannot be written: {store_problem(exc, self.url)}") from None
        for rel in stale:
            self._pushed.pop(rel, None)
        self.fs.invalidate_cache(self.path)


def needs_staging(url: str) -> bool:
    """True for URLs TensorFlow cannot open itself (anything but a local path or file://)."""
    return not is_local(url)
