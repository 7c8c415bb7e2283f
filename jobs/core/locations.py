"""Where a path or URL points, said once: its storage protocol (as fsspec reads it) and its store and
normalised path. The overlap check of the commit, the allowed data roots of the Airflow side and the
storage layer's protocol check all read these, so two spellings of one folder (`~/x` and `$HOME/x`,
`file:///x` and `/x`, `a/../b`) never disagree between a check and the write that follows it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# the stores the project reads and writes (fsspec protocols); anything else (http, ftp, data, memory,
# a `::` chain) is never opened, whoever names it
SUPPORTED_PROTOCOLS = ("file", "local", "s3", "s3a", "oci", "root")
LOCAL_PROTOCOLS = ("file", "local")
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def protocol(url: str) -> str:
    """The fsspec protocol of `url` as fsspec itself would pick it (`data:` needs no `//`, a `::` chain
    starts with its outer layer); "file" for a plain path."""
    if "::" in url:
        return url.split("::", 1)[0].split("://", 1)[0].lower() + "::"
    match = _PROTOCOL.match(url)
    if match and len(match.group(1)) > 1:  # a one-letter "protocol" is a Windows drive
        return match.group(1).lower()
    if url.lower().startswith("data:"):
        return "data"
    return "file"


def is_supported(url: str) -> bool:
    return protocol(url) in SUPPORTED_PROTOCOLS


@dataclass(frozen=True)
class Location:
    """A folder or file: `store` ("file", or "<protocol>://<host or bucket>") and an absolute,
    "/"-separated `path` without a trailing slash."""

    store: str
    path: str

    def __str__(self) -> str:
        return self.path if self.store == "file" else f"{self.store}{self.path}"

    def within(self, other: Location) -> bool:
        """True when this location is `other` or lies below it."""
        if self.store != other.store:
            return False
        return self.path == other.path or self.path.startswith(other.path.rstrip("/") + "/")


class NotALocation(ValueError):
    """A string that names no place the project may read or write."""


def local_path(url: str) -> str:
    """A local path or file:// URL as the path fsspec's local filesystem uses (`~` expanded)."""
    for prefix in ("file://", "local://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    return os.path.expanduser(url)


def lexical(url: str) -> Location:
    """The location `url` names, from its spelling alone (no I/O): a local path made absolute with `~`
    expanded and `..` folded; a URL's protocol (s3a read as s3), its host or bucket as written, repeated
    slashes folded. A URL with `.` or `..` segments is refused: object stores take them literally."""
    kind = protocol(url)
    if kind not in SUPPORTED_PROTOCOLS:
        raise NotALocation(f"storage protocol {kind}:// is not supported here")
    if kind in LOCAL_PROTOCOLS:
        return Location("file", os.path.normpath(os.path.abspath(local_path(url))))
    rest = url.split("://", 1)[1]
    host, _, path = rest.partition("/")
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise NotALocation(f"{url}: '.' and '..' segments are not allowed in a URL")
    store = "s3" if kind == "s3a" else kind
    return Location(f"{store}://{host}", "/" + "/".join(segments))


def resolved(url: str) -> Location:
    """`lexical(url)` with a local path's symlinks resolved (I/O on the path): where a write lands."""
    where = lexical(url)
    if where.store == "file":
        return Location("file", os.path.realpath(where.path))
    return where
