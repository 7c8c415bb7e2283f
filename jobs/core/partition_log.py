"""The partition log: an append-only sequence of small JSON entries under
`<output_root>/<dag id>/partitions/log/`, one action each (a claim, a result, a stale mark), each
created exclusively under the next sequence number. Creating a name that exists fails on every
store we write (a hard link locally, `If-None-Match: *` on S3), so two writers racing for one
number never both succeed: the loser reads the log again and decides again. Nothing in it is ever
rewritten; the state of the partitions is a fold over it (jobs.core.partitions)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.core.errors import BadInputError, UsageError
from jobs.core.storage import filesystem, is_local, local_path, url_protocol

log = logging.getLogger(__name__)

FORMAT = 1  # the log's format; an entry of a later format is refused, never guessed at
LOG_DIR = "log"
SEQ_DIGITS = 8
MAX_ROUNDS = 1000  # appends lost to racing writers before giving up (each loss means progress elsewhere)


@dataclass(frozen=True)
class Entry:
    """One logged action: its sequence number, the file it is in, and its body."""

    seq: int
    url: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def key(self) -> str:
        return str(self.body.get("key", ""))


class NotJson(BadInputError):
    """An entry that does not parse."""


def entry_url(root: str, seq: int) -> str:
    return f"{root.rstrip('/')}/{LOG_DIR}/{seq:0{SEQ_DIGITS}d}.json"


def check_format(body: dict[str, Any], source: str) -> None:
    """Refuse an entry written by a newer colliderflow (its meaning is not ours to guess)."""
    found = body.get("format")
    if not isinstance(found, int) or isinstance(found, bool):
        raise BadInputError(source, "is not a partition manifest (a claim of the partition log)")
    if found > FORMAT:
        raise BadInputError(
            source, f"written in partition-log format {found!r}; this colliderflow reads {FORMAT}"
        )


def read_entry(url: str) -> dict[str, Any]:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:  # not cat_file: fsspec-xrootd's needs a byte range
            body = json.loads(f.read())
    except FileNotFoundError:
        raise BadInputError(url, "no such partition manifest") from None
    except ValueError:
        raise NotJson(url, "is not a partition manifest (not JSON)") from None
    if not isinstance(body, dict):
        raise BadInputError(url, "is not a partition manifest")
    check_format(body, url)
    return body


def read_log(root: str) -> list[Entry]:
    """Every entry, in sequence order ([] when the log does not exist yet)."""
    fs, path = filesystem(f"{root.rstrip('/')}/{LOG_DIR}")
    fs.invalidate_cache(path)
    if not fs.exists(path):  # (fsspec-xrootd's ls of a missing folder raises a bare OSError)
        return []
    names = sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    entries = []
    for name in names:
        stem = name.removesuffix(".json")
        if not (name.endswith(".json") and stem.isdigit() and len(stem) == SEQ_DIGITS):
            continue  # a temporary file of a local append in progress
        url = entry_url(root, int(stem))
        try:
            entries.append(Entry(int(stem), url, read_entry(url)))
        except NotJson:  # a write interrupted on a store without atomic creates (root://): no action
            log.warning("%s: not a complete log entry (an interrupted write); ignored", url)
            entries.append(Entry(int(stem), url, {"format": FORMAT, "kind": "interrupted"}))
    return entries


def create_exclusive(url: str, data: bytes) -> None:
    """Write `data` at `url` whole, or raise FileExistsError when the name is taken: a temporary
    file hard-linked into place locally, a conditional PUT on an object store."""
    if is_local(url):
        path = local_path(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return
    if url_protocol(url) == "root":
        _create_xrootd(url, data)
        return
    fs, path = filesystem(url)
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        raise
    except (NotImplementedError, ValueError):
        raise UsageError(f"{url}: this store cannot create a file exclusively; keep partition logs (the "
                         "output root) on a local path, s3:// or root://") from None  # fmt: skip
    except OSError as exc:  # s3fs reports a failed precondition as an OSError with the 412 in it
        if "PreconditionFailed" in str(exc) or "412" in str(exc):
            raise FileExistsError(url) from None
        raise


def _create_xrootd(url: str, data: bytes) -> None:
    """XRootD's own exclusive create (fsspec-xrootd has no "x" mode): open with NEW, which fails when
    the file exists. The file is visible from its creation, so a reader may meet it half-written (read
    as an interrupted entry); object stores and local files have no such window."""
    from XRootD import client
    from XRootD.client.flags import OpenFlags

    f = client.File()
    status, _ = f.open(url, OpenFlags.NEW | OpenFlags.MAKEPATH)
    if not status.ok:
        if "exist" in status.message.lower():
            raise FileExistsError(url)
        raise OSError(f"{url}: {status.message.strip()}")
    try:
        status, _ = f.write(data)
        if not status.ok:
            raise OSError(f"{url}: {status.message.strip()}")
    finally:
        f.close()


Decide = Callable[[list[Entry]], dict[str, Any] | None]


def settle(root: str, decide: Decide) -> list[Entry]:
    """Append what `decide` asks for, one entry at a time, until it asks for nothing; each decision
    sees the whole log, including the entries that racing writers appended. Returns the final log."""
    for _ in range(MAX_ROUNDS):
        entries = read_log(root)
        body = decide(entries)
        if body is None:
            return entries
        seq = entries[-1].seq + 1 if entries else 1
        data = (json.dumps({"format": FORMAT, **body}, indent=1) + "\n").encode()
        try:
            create_exclusive(entry_url(root, seq), data)
        except FileExistsError:
            continue
    raise RuntimeError(f"{root}: gave up appending to the partition log after {MAX_ROUNDS} lost races")
