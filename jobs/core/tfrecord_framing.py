"""TFRecord's framing, without TensorFlow: each record is a uint64 length, the masked CRC32C of the
length, the data, the masked CRC32C of the data (tensorflow/core/lib/io/record_writer.cc). Written by
jobs.tfrecords, checked by the TensorFlow stages before TensorFlow starts (jobs.core.tf_input_check).
"""

from __future__ import annotations

import os
import struct

import crc32c  # a dependency of oci; hardware-accelerated CRC32C

_MASK_DELTA = 0xA282EAD8
HEADER_BYTES = 12  # length + its checksum


def masked_crc32c(data: bytes) -> bytes:
    """CRC32C rotated and offset (tensorflow/core/lib/hash/crc32c.h), little-endian."""
    crc = crc32c.crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def frame_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, masked_crc32c(length), data, masked_crc32c(data)))


def first_record(head: bytes) -> bytes | None:
    """The data of the first record in the first bytes of a TFRecord file (possibly cut short), or
    None when they do not start with a valid record header."""
    if len(head) < HEADER_BYTES or head[8:12] != masked_crc32c(head[:8]):
        return None
    (length,) = struct.unpack("<Q", head[:8])
    return head[HEADER_BYTES : HEADER_BYTES + length]


def framing_problem(path: str) -> str | None:
    """Why the local TFRecord file `path` (plain or .gz) is not a whole sequence of records: a record
    or a header cut short, or a length that fails its checksum, with the byte offset; None when it is
    whole. Plain files are walked header to header (a seek per record, no data read). TensorFlow reads
    a file cut inside a header as a shorter file, silently, and names no file in its DataLossError."""
    import gzip

    compressed = path.endswith(".gz")
    size = None if compressed else os.path.getsize(path)
    offset = 0
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            while header := f.read(HEADER_BYTES):
                if len(header) < HEADER_BYTES or masked_crc32c(header[:8]) != header[8:]:
                    return f"a record header at byte {offset:,} is cut short or corrupt"
                length = struct.unpack("<Q", header[:8])[0] + 4
                end = offset + HEADER_BYTES + length
                if size is not None:
                    if end > size:
                        have, want = size - offset, end - offset
                        return f"the record at byte {offset:,} is cut short ({have:,} of {want:,} bytes)"
                    f.seek(end)
                elif len(f.read(length)) < length:
                    return f"the record at byte {offset:,} is cut short"
                offset = end
    except (OSError, EOFError) as exc:  # a gzip stream cut short or garbled
        return f"unreadable after byte {offset:,} ({exc})"
    return None


def broken_file(paths: list[str]) -> tuple[str, str] | None:
    """The first of `paths` whose framing is broken, with why."""
    for path in paths:
        if problem := framing_problem(path):
            return path, problem
    return None
