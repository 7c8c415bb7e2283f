"""How a stage's output gets written: which output it may claim (never an input, never a folder it
did not write), how the output replaces a previous one (atomic at every instant), and how the
leftovers of writers that died are reclaimed. docs/outputs.md tells the whole story.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from importlib import metadata

import fsspec

from jobs.core.errors import BadInputError, UsageError
from jobs.core.listing import GLOB_CHARS
from jobs.core.locations import NotALocation, resolved
from jobs.core.storage import COMMITTING_MARKER, SUCCESS_MARKER, filesystem, is_local, write_json
from jobs.core.store_probe import probe_store

log = logging.getLogger(__name__)

# Written into every output before _SUCCESS: a folder holding it was written by a colliderflow stage,
# so a later run may replace it. A non-empty folder without it is never replaced.
OWNER_MARKER = "_COLLIDERFLOW"
# A staging or old folder of a writer on another machine (whose process cannot be checked from here),
# or one of a version that did not record its writer, is reclaimed once it is this old.
LEFTOVER_AGE_S = 24 * 3600


# --- which output a stage may claim --------------------------------------------------------------------


def claim_output(
    output: str, inputs: Iterable[str], option: str = "--output", *, inside: bool = False
) -> None:
    """Refuse, before any work, an output that cannot be written, that is, contains or lies inside one
    of `inputs` (after symlinks and `..`; for URLs the same store, bucket and prefix; a glob input by
    the folder its pattern starts in), or that is an existing non-empty folder no colliderflow stage
    wrote. `inside`: the output folder itself is written into (train's model folder)."""
    check_writable(output, option, inside=inside)
    for source in inputs:
        how = relation(output, source)
        if how:
            raise BadInputError(
                f"{option} {output}", f"{how} the input {source}; a stage never writes over its inputs: "
                f"choose another {option}"
            )  # fmt: skip
    check_owned(output, option)


def check_contained(output: str, container: str, option: str, container_option: str) -> None:
    """Refuse an output that is `container` or contains it (an output inside it is fine): jobs.metrics'
    report lives in the run directory whose stage outputs it reads."""
    how = relation(output, container)
    if how and how != "lies inside":
        raise BadInputError(
            f"{option} {output}",
            f"{how} {container_option} {container}: choose a folder inside it or elsewhere",
        )


def check_owned(output: str, option: str = "--output") -> None:
    """Refuse an existing non-empty output folder without OWNER_MARKER (or, on a store, without the
    `_COMMITTING` claim of a colliderflow run that failed): it holds someone else's files."""
    fs, path = filesystem(output)
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    if not fs.isdir(path):
        return
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    if OWNER_MARKER in names:
        return _check_same_stage(fs, f"{path}/{OWNER_MARKER}", f"{option} {output}")
    if not names or COMMITTING_MARKER in names:
        return
    raise BadInputError(
        f"{option} {output}",
        f"an existing folder that no colliderflow stage wrote (no {OWNER_MARKER} marker); "
        "it is never replaced: choose a new or empty folder",
    )


def _check_same_stage(fs: fsspec.AbstractFileSystem, marker: str, source: str) -> None:
    """Refuse an output whose owner marker names another stage (`dimuon --output <a generate sample>`
    once deleted the sample): a stage replaces only what it wrote itself. A marker of no stage
    (a library call, an older version) is accepted."""
    try:
        owner = str(json.loads(fs.cat_file(marker)).get("stage") or "")
    except (OSError, ValueError, AttributeError):
        owner = ""
    me = _stage_name()
    if owner.startswith("jobs.") and me.startswith("jobs.") and owner != me:
        raise BadInputError(
            source, f"holds the output of {owner}, not of {me}: a stage replaces only its own outputs; "
            "choose another folder"
        )  # fmt: skip


def local_target(url: str) -> str:
    """The one path a local output is checked at and written to (jobs.core.locations.resolved: `~`,
    `file://`, `..` and symlinks resolved), so that no check and write ever read one URL differently."""
    return resolved(url).path


def relation(output: str, source: str) -> str:
    """How `output` sits relative to `source`: 'is the same folder as', 'contains', 'lies inside' or ''."""
    out_store, out_path = _location(output)
    in_store, in_path = _location(source)
    if out_store != in_store:
        return ""
    if out_path == in_path:
        return "is the same folder as"
    if in_path.startswith(out_path.rstrip("/") + "/"):
        return "contains"
    if out_path.startswith(in_path.rstrip("/") + "/"):
        return "lies inside"
    return ""


def _location(url: str) -> tuple[str, str]:
    """(store, normalised path) of a URL or path, as jobs.core.locations resolves it for every check
    and write (`~`, `file://`, `..` and symlinks); a glob stands for the folder where its pattern
    starts."""
    base = _before_glob(url, "/") or "."
    try:
        where = resolved(base)
    except NotALocation as exc:
        raise BadInputError(url, str(exc)) from None
    return where.store, where.path


def _before_glob(path: str, sep: str) -> str:
    parts = path.split(sep)
    for i, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            return sep.join(parts[:i])
    return path


def check_writable(url: str, option: str = "--output", *, inside: bool = False) -> None:
    """Fail at once, naming the option, when `url` cannot become an output directory (checked before
    any computation, not found out at the end of it): the path is a file, a parent is a file, or the
    directory it would be created in (`inside`: the directory itself, when it exists) refuses a
    write. On an object store: the endpoint answers, the credentials work, the bucket exists and
    takes an object beside the output (probe_store)."""
    if not is_local(url):
        probe_store(url, source=f"{option} {url}", write=True)
        return
    path = local_target(url)
    check_name_length(path, f"{option} {url}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise BadInputError(f"{option} {url}", "exists and is not a directory")
    target = path if inside and os.path.isdir(path) else os.path.dirname(path)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        raise BadInputError(f"{option} {url}", f"{target} is a file, not a directory")
    try:
        _probe_write(target)
    except OSError as exc:
        raise BadInputError(f"{option} {url}", f"cannot write into {target} ({exc.strerror})") from None


def check_name_length(path: str, source: str) -> None:
    """Refuse an output name too long for the staging folder beside it (its name adds the writer's
    pid, start time, a random part and the host to the output's): found before the work, not at the
    commit after it."""
    name = os.path.basename(path.rstrip("/"))
    longest = len(os.fsencode(_owned_name(name, "staging"))) + 16  # room for a longer pid and start time
    limit = os.pathconf(os.path.dirname(path) if os.path.isdir(os.path.dirname(path)) else "/", "PC_NAME_MAX")
    if longest > limit:
        spare = limit - (longest - len(os.fsencode(name)))
        raise BadInputError(source, f"its name is {len(os.fsencode(name))} bytes; at most {spare} here")


def _probe_write(directory: str) -> None:
    """Create something in `directory` and remove it: an unnamed file (O_TMPFILE), which a writer
    killed at this point cannot leave behind; a probe folder where the filesystem has no O_TMPFILE."""
    try:
        os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    os.rmdir(tempfile.mkdtemp(prefix=".colliderflow-probe-", dir=directory))


def mark_output(directory: str, stage: str | None = None) -> None:
    """Write OWNER_MARKER into an output folder (a local path or a URL): who wrote it and when."""
    if is_local(directory):
        os.makedirs(directory.removeprefix("file://"), exist_ok=True)
    write_json(f"{directory.rstrip('/')}/{OWNER_MARKER}", _owner_record(stage))


def _owner_record(stage: str | None = None) -> dict[str, str]:
    return {
        "stage": stage or _stage_name(),
        "written_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "version": _version(),
    }


def _stage_name() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec else "colliderflow"


def _version() -> str:
    try:
        return metadata.version("colliderflow")
    except metadata.PackageNotFoundError:
        return "unknown"


# --- leftovers of writers that died --------------------------------------------------------------------


def _start_time(pid: int) -> str:
    """The start time of process `pid` (field 22 of /proc/PID/stat, in clock ticks since boot), which
    tells a live writer from a later process that reuses its pid; '' when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _host() -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname()) or "host"


def _owned_name(final: str, kind: str) -> str:
    """`.<name>.<kind>-<pid>-<start>-<random>@<host>`: the writer is in the name, nothing inside the
    folder (which becomes the output)."""
    pid = os.getpid()
    return f".{os.path.basename(final)}.{kind}-{pid}-{_start_time(pid) or 0}-{uuid.uuid4().hex[:8]}@{_host()}"


def _leftover_pattern(final: str) -> re.Pattern[str]:
    """The exact names _owned_name gives the staging and old folders of `final`."""
    name = re.escape(os.path.basename(final))
    return re.compile(rf"\.{name}\.(staging|old)-(\d+)-(\d+)-[0-9a-f]{{8}}@([\w.-]+)")


def _writer_is_gone(match: re.Match[str], mtime: float) -> bool:
    """Whether the writer named in a leftover's name is dead: its process is gone or is a later one
    with the same pid (this machine), or, on another machine, the folder is older than LEFTOVER_AGE_S."""
    _, pid, start, host = match.groups()
    if host != _host():
        return time.time() - mtime > LEFTOVER_AGE_S
    started = _start_time(int(pid))
    return not started or start not in ("0", started)


def _proves_ours(path: str) -> bool:
    """A folder a stage made: holding the owner marker, which a staging folder gets when it is created
    and every output before `_SUCCESS`, or nothing but that marker's temporary file (its writer was
    killed before the marker was in place)."""
    try:
        names = os.listdir(path)
        if all(name.startswith(f"{OWNER_MARKER}.tmp-") for name in names):
            return True
        with open(os.path.join(path, OWNER_MARKER)) as f:
            return "stage" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def _remove_owned(path: str) -> None:
    """Remove a staging or old folder of ours with its owner marker last: a removal killed midway
    leaves a folder that still proves it is ours, which the next run finishes removing."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path):
            if entry.name == OWNER_MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(path, OWNER_MARKER))
    shutil.rmtree(path, ignore_errors=True)


def reclaim_leftovers(final: str) -> list[str]:
    """Remove the staging and old folders beside a local output whose writers are gone (killed mid-run
    or mid-commit); those of a live writer are left alone. Only folders that prove they are ours are
    touched: the exact name a writer gives them and an owner marker inside (or nothing at all); a
    folder that only looks like one is left alone, with a warning. Returns what was removed."""
    parent = os.path.dirname(final) or "."
    pattern = _leftover_pattern(final)
    prefixes = tuple(f".{os.path.basename(final)}.{kind}" for kind in ("staging", "old"))
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(parent):
            if not entry.name.startswith(prefixes) or not entry.is_dir(follow_symlinks=False):
                continue
            match = pattern.fullmatch(entry.name)
            with contextlib.suppress(FileNotFoundError):
                if not match or not _proves_ours(entry.path):
                    log.warning(
                        "left %s alone: named like a leftover, but not written by a stage", entry.path
                    )
                elif _writer_is_gone(match, entry.stat(follow_symlinks=False).st_mtime):
                    _remove_owned(entry.path)
                    removed.append(entry.path)
    for path in removed:
        log.info("removed %s, left by a writer that is gone", path)
    return removed


# --- replacing a local output --------------------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_LIBC = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_LIBC, "renameat2", None)


def _rename2(src: str, dst: str, flags: int) -> None:
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), src, None, dst)


def _swap_into_place(staging: str, final: str) -> None:
    """Put a finished staging folder at `final` in one step: renamed if nothing is there, else
    exchanged with the previous output (renameat2 RENAME_EXCHANGE), which then sits at the staging
    path, to be removed. No instant without a complete output at `final`. Where the kernel or the
    filesystem cannot exchange, two renames (with a short window; docs/outputs.md)."""
    try:
        _rename2(staging, final, _RENAME_NOREPLACE)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        return _replace_by_two_renames(staging, final)
    _rename2(staging, final, _RENAME_EXCHANGE)


def _replace_by_two_renames(staging: str, final: str) -> None:
    """The fallback: the old output moved aside, the new one renamed in, the old one removed."""
    old: str | None = os.path.join(os.path.dirname(final), _owned_name(final, "old"))
    try:
        os.replace(final, old)
    except FileNotFoundError:  # no previous output (or another run just moved it aside)
        old = None
    try:
        os.replace(staging, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise BadInputError(
            final, "another run committed this output at the same moment; it is in place, this run's "
            "result was discarded"
        ) from None  # fmt: skip
    finally:
        if old:
            _remove_owned(old)


def _local_staging(final: str) -> str:
    parent = os.path.dirname(final) or "."
    os.makedirs(parent, exist_ok=True)
    reclaim_leftovers(final)
    staging = os.path.join(parent, _owned_name(final, "staging"))
    umask = os.umask(0)
    os.umask(umask)
    os.mkdir(staging, 0o777 & ~umask)
    write_json(os.path.join(staging, OWNER_MARKER), _owner_record())  # what makes it reclaimable
    return staging


def _seal(directory: str) -> None:
    """The owner marker, then _SUCCESS last of all."""
    mark_output(directory)
    with open(os.path.join(directory, SUCCESS_MARKER), "w"):
        pass


# --- committing to an object store ---------------------------------------------------------------------


def _remote_target(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the output path inside it (a prefix inside a bucket, not a bucket root)."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    if not parent or not name:
        raise UsageError(f"{url}: an output must be a prefix inside a bucket, not a bucket root")
    return fs, path


def _begin_remote(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Claim an object-store output for writing in place: put `_COMMITTING` first, then delete a
    previous `_SUCCESS` before any other old object, then the rest of a previous output (run
    directories are unique per run, so there is normally none; a rerun of the same task replaces it).
    From here until `_publish_remote` every reader refuses the directory."""
    fs.pipe_file(f"{path}/{COMMITTING_MARKER}", b"")
    fs.invalidate_cache(path)
    if fs.exists(f"{path}/{SUCCESS_MARKER}"):
        fs.rm_file(f"{path}/{SUCCESS_MARKER}")
    old = [p for p in fs.find(path) if p.rsplit("/", 1)[-1] != COMMITTING_MARKER]
    if old:
        fs.rm(old)


def _publish_remote(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Mark a complete in-place output: the owner marker, `_SUCCESS` written last of all the data,
    then the `_COMMITTING` claim removed. Nothing is copied: the parts already are where readers
    find them."""
    fs.pipe_file(f"{path}/{OWNER_MARKER}", (json.dumps(_owner_record(), indent=2) + "\n").encode())
    fs.pipe_file(f"{path}/{SUCCESS_MARKER}", b"")
    fs.rm_file(f"{path}/{COMMITTING_MARKER}")
    fs.invalidate_cache(path)


def _drop_remote(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove what a failed run wrote in place, `_COMMITTING` last. If the cleanup itself fails (the
    store went away, often why the run failed) the claim stays, readers keep refusing the directory,
    and the run's own error is the one reported."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
        rest = [p for p in fs.find(path) if p.rsplit("/", 1)[-1] != COMMITTING_MARKER]
        if rest:
            fs.rm(rest)
        fs.rm_file(f"{path}/{COMMITTING_MARKER}")
    fs.invalidate_cache(path)


@contextlib.contextmanager
def _remote_in_place(url: str) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    """Claim, then publish (or, on failure, drop) an object-store output written in place."""
    fs, path = _remote_target(url)
    _begin_remote(fs, path)
    try:
        yield fs, path
        _publish_remote(fs, path)
    except BaseException:
        _drop_remote(fs, path)
        raise


# --- the one way an output gets written ------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output_dir(url: str, *, shared: bool = False) -> Iterator[str]:
    """Yield the directory to write an output into; on success it is complete under `url` with
    OWNER_MARKER and `_SUCCESS` (replacing a previous output), on failure nothing under `url` reads
    as complete.

    Local `url`: a hidden staging folder beside it (its name says which process writes it), swapped
    into place in one step (_swap_into_place); the leftovers of dead writers are reclaimed first.
    Object store: there is no rename, but run directories are unique per run, so the output is
    written in place: `_COMMITTING` first, parts at their final keys, `_SUCCESS` last (readers refuse
    the directory until then, see check_complete; a failure removes what was written). By default
    the yielded directory is a local one, uploaded once at the end; with `shared=True` it is the
    output URL itself, for outputs that Spark executors on other machines write into through
    `filesystem()`/fsspec. Either way every byte crosses to the store once, with no server-side copy."""
    if shared and not is_local(url):
        with _remote_in_place(url) as (_, path):
            yield f"{url.split('://', 1)[0]}://{path}"
        return
    if is_local(url):
        check_writable(url)
        final = local_target(url)
        staging = _local_staging(final)
    else:
        _remote_target(url)  # a bucket root is refused before any work
        staging = tempfile.mkdtemp(prefix="colliderflow-staging-")
    try:
        yield staging
        if is_local(url):
            _seal(staging)
            _swap_into_place(staging, final)
        else:
            with _remote_in_place(url) as (fs, path):
                fs.put(staging.rstrip("/") + "/", path + "/", recursive=True)
    finally:
        if os.path.exists(staging):  # the failed run's files, or the previous output swapped out
            _remove_owned(staging)


def check_free_space(url: str, needed_bytes: int, option: str) -> None:
    """Refuse, before writing anything, an output of about `needed_bytes` that the filesystem which
    would hold `url` (its nearest existing parent) has no room for: found at once, not when the disk
    is full. Local paths only; an object store's capacity is not known up front."""
    if not is_local(url):
        return
    path = local_target(url)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free
    if needed_bytes > free:
        raise BadInputError(option, f"needs ~{_size(needed_bytes)} at {path}, only {_size(free)} free")


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    raise AssertionError("unreachable")
