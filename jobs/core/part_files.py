"""One output part written from inside a Spark task straight to its final location (a local path or
an object-store URL through the one storage layer), visible under its final name only when complete:
locally a temporary name renamed on commit, on an object store a single upload that the store makes
visible at once when it completes (a discarded one never appears). A retried task writes the same
name again, so it replaces its own part instead of adding a second one."""

from __future__ import annotations

import os
import uuid
from typing import BinaryIO

import fsspec

from jobs.core.storage import filesystem, is_local


class PartFile:
    """`file` is the binary stream to write (pyarrow's ParquetWriter accepts it); then `commit()`
    (returns the part's size in bytes) or `abort()`."""

    def __init__(self, url: str):
        self.url = url
        self._local = is_local(url)
        if self._local:
            self._final = fsspec.core.url_to_fs(url)[1]
            directory, name = os.path.split(self._final)
            os.makedirs(directory or ".", exist_ok=True)
            self._tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
            self.file: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        else:
            fs, path = filesystem(url)
            self.file = fs.open(path, "wb")

    def commit(self) -> int:
        size = self.file.tell()
        self.file.close()  # on an object store: completes the upload, the object appears whole
        if self._local:
            os.replace(self._tmp, self._final)
        return size

    def abort(self) -> None:
        if self._local:
            self.file.close()
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
            return
        discard = getattr(self.file, "discard", None)
        if discard is not None:
            discard()  # s3fs: aborts a multipart upload; nothing was made visible
        self.file.closed = True  # never complete the upload on close or garbage collection
