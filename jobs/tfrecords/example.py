"""TFRecord writing without TensorFlow: hand-encoded ``tf.train.Example`` protos and the TFRecord
framing (length, masked CRC32C), so that Spark tasks need neither a TensorFlow import (seconds per
worker, gigabytes of RSS) nor a per-record protobuf object. The encoding is checked against
``tf.train.Example`` in tests/jobs/test_tfrecords.py."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import crc32c  # a dependency of oci; hardware-accelerated CRC32C
import numpy as np

from jobs.core.part_files import PartFile
from jobs.dltrigger_schema import COUNT_COLUMN, GRU_COLUMN, HLF_COLUMN, LABEL_COLUMN

_MASK_DELTA = 0xA282EAD8


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_delimited(field: int, payload_len: int) -> bytes:
    """Tag and length of a length-delimited field (wire type 2); the payload follows."""
    return _varint(field << 3 | 2) + _varint(payload_len)


def _float_feature_prefix(key: str, n_values: int) -> bytes:
    """Everything of one map entry {key: Feature{float_list: FloatList{value: [...]}}} up to the raw
    float bytes, which is constant for a fixed-length float feature."""
    floats_len = 4 * n_values
    float_list_hdr = _len_delimited(1, floats_len)  # FloatList.value, packed
    float_list_len = len(float_list_hdr) + floats_len
    feature_hdr = _len_delimited(2, float_list_len)  # Feature.float_list
    feature_len = len(feature_hdr) + float_list_len
    value_hdr = _len_delimited(2, feature_len)  # map entry value
    k = key.encode()
    key_part = _len_delimited(1, len(k)) + k  # map entry key
    entry_len = len(key_part) + len(value_hdr) + feature_len
    return _len_delimited(1, entry_len) + key_part + value_hdr + feature_hdr + float_list_hdr


def _int64_entry(key: str, value: int) -> bytes:
    v = _varint(value & 0xFFFFFFFFFFFFFFFF)
    int_list = _len_delimited(1, len(v)) + v  # Int64List.value, packed
    feature = _len_delimited(3, len(int_list)) + int_list  # Feature.int64_list
    k = key.encode()
    entry = _len_delimited(1, len(k)) + k + _len_delimited(2, len(feature)) + feature
    return _len_delimited(1, len(entry)) + entry


def encode_examples(
    hlf: np.ndarray, gru: np.ndarray, label: np.ndarray, n_particles: np.ndarray | None = None
) -> list[bytes]:
    """Serialized tf.train.Example for each row: HLF_input [14], GRU_input [801*19] row-major,
    encoded_label [3] (float32) and, when given, n_particles (int64)."""
    n = hlf.shape[0]
    arrays = [np.ascontiguousarray(a, dtype="<f4").reshape(n, -1) for a in (hlf, gru, label)]
    keys = (HLF_COLUMN, GRU_COLUMN, LABEL_COLUMN)
    prefixes = [_float_feature_prefix(k, a.shape[1]) for k, a in zip(keys, arrays, strict=True)]
    static_len = sum(len(p) + 4 * a.shape[1] for p, a in zip(prefixes, arrays, strict=True))
    out = []
    for i in range(n):
        tail = _int64_entry(COUNT_COLUMN, int(n_particles[i])) if n_particles is not None else b""
        features_len = static_len + len(tail)
        out.append(
            b"".join(
                (
                    _len_delimited(1, features_len),  # Example.features
                    prefixes[0], arrays[0][i].tobytes(),
                    prefixes[1], arrays[1][i].tobytes(),
                    prefixes[2], arrays[2][i].tobytes(),
                    tail,
                )
            )
        )  # fmt: skip
    return out


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c.crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def frame_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, _masked_crc(length), data, _masked_crc(data)))


class ShardWriter:
    """Writes one TFRecord shard (gzip or not) to `path`, a local path or an object-store URL, visible
    only when complete (jobs.core.part_files.PartFile), so a failed or retried Spark task never
    leaves a partial shard behind."""

    def __init__(self, path: str, compression: str = "none", level: int = 6):
        if compression not in ("none", "gzip"):
            raise ValueError(f"compression must be 'none' or 'gzip', got {compression!r}")
        self.path = path
        self._part = PartFile(path)
        self._file = self._part.file
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31) if compression == "gzip" else None
        self.records = 0
        self.raw_bytes = 0

    def write_all(self, records: Sequence[bytes]) -> None:
        chunk = b"".join(frame_record(r) for r in records)
        self.records += len(records)
        self.raw_bytes += len(chunk)
        self._file.write(self._zlib.compress(chunk) if self._zlib else chunk)

    def close(self) -> int:
        """Finish the shard; returns its size in bytes."""
        if self._zlib:
            self._file.write(self._zlib.flush())
        return self._part.commit()

    def abort(self) -> None:
        self._part.abort()
