"""TFRecord's framing, without TensorFlow: each record is a uint64 length, the masked CRC32C of the
length, the data, the masked CRC32C of the data (tensorflow/core/lib/io/record_writer.cc). Written by
jobs.tfrecords, checked by the TensorFlow stages before TensorFlow starts (jobs.core.tf_input_check).
"""

from __future__ import annotations

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
