"""How a stage's output gets written: checks before writing (free space).

(Started by helper C with check_free_space only; helper A moves the commit functions of
jobs/core/storage.py here.)
"""

from __future__ import annotations

import os
import shutil

from jobs.core.errors import BadInputError
from jobs.core.storage import is_local


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    raise AssertionError("unreachable")


def check_free_space(url: str, needed_bytes: int, option: str) -> None:
    """Refuse, before writing anything, an output of about `needed_bytes` that the filesystem which
    would hold `url` (its nearest existing parent) has no room for: found at once, not when the disk
    is full. Local paths only; an object store's capacity is not known up front."""
    if not is_local(url):
        return
    path = os.path.abspath(url.removeprefix("file://"))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free
    if needed_bytes > free:
        raise BadInputError(option, f"needs ~{_size(needed_bytes)} at {path}, only {_size(free)} free")
