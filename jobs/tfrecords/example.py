"""TFRecord writing without TensorFlow: hand-encoded ``tf.train.Example`` protos and the TFRecord
framing (length, masked CRC32C), so that Spark tasks need neither a TensorFlow import (seconds per
worker, gigabytes of RSS) nor a per-record protobuf object. The encoding is checked against
``tf.train.Example`` in tests/jobs/test_tfrecords.py."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from jobs.core.part_files import PartFile
from jobs.core.tfrecord_framing import frame_record
from jobs.dltrigger_schema import COUNT_COLUMN, GRU_COLUMN, HLF_COLUMN, LABEL_COLUMN


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
    hlf: np.ndarray,
    gru: np.ndarray,
    label: np.ndarray,
    n_particles: np.ndarray | None = None,
    gru_lengths: np.ndarray | None = None,
) -> list[bytes]:
    """Serialized tf.train.Example for each row: HLF_input [14], GRU_input row-major, encoded_label [3]
    (float32) and, when given, n_particles (int64). GRU_input is (n, 801, 19) (the padded layout), or
    with `gru_lengths` the flat (R, 19) particle rows of which event i owns gru_lengths[i] (the ragged
    layout: only those rows' floats are stored). The float bytes are sliced from one buffer per
    column; the only per-record work is joining them."""
    n = hlf.shape[0]
    hlf_a, label_a = (np.ascontiguousarray(a, dtype="<f4").reshape(n, -1) for a in (hlf, label))
    gru_a = np.ascontiguousarray(gru, dtype="<f4")
    if gru_lengths is None:
        width = gru_a.size // n if n else 0
        bounds = np.arange(n + 1, dtype=np.int64) * (4 * width)
    else:
        width = gru_a.shape[1] if gru_a.ndim == 2 else 0
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.asarray(gru_lengths, dtype=np.int64) * (4 * width), out=bounds[1:])
    hlf_m, gru_m, label_m = (memoryview(a).cast("B") for a in (hlf_a, gru_a, label_a))
    hlf_w, label_w = 4 * hlf_a.shape[1], 4 * label_a.shape[1]
    hlf_p = _float_feature_prefix(HLF_COLUMN, hlf_a.shape[1])
    label_p = _float_feature_prefix(LABEL_COLUMN, label_a.shape[1])
    gru_prefixes: dict[int, bytes] = {}
    static_len = len(hlf_p) + hlf_w + len(label_p) + label_w
    starts, ends = bounds[:-1].tolist(), bounds[1:].tolist()
    counts = n_particles.tolist() if n_particles is not None else None
    out = []
    for i in range(n):
        a, b = starts[i], ends[i]
        gru_p = gru_prefixes.get(b - a)
        if gru_p is None:
            gru_p = gru_prefixes[b - a] = _float_feature_prefix(GRU_COLUMN, (b - a) // 4)
        tail = _int64_entry(COUNT_COLUMN, counts[i]) if counts is not None else b""
        features_len = static_len + len(gru_p) + (b - a) + len(tail)
        out.append(
            b"".join(
                (
                    _len_delimited(1, features_len),  # Example.features
                    hlf_p, hlf_m[i * hlf_w : (i + 1) * hlf_w],
                    gru_p, gru_m[a:b],
                    label_p, label_m[i * label_w : (i + 1) * label_w],
                    tail,
                )
            )
        )  # fmt: skip
    return out


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
