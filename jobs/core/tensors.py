"""Arrow nested lists <-> fixed-shape numpy arrays, and one-hot labels: how the DL-trigger tensors
(shapes in jobs.dltrigger_schema) travel through Parquet. Shared by ingest, prepare, tfrecords and the
training input; free of Spark and TensorFlow imports so Spark tasks and the driver use it cheaply."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.dltrigger_schema import N_CLASSES


class ShapeError(ValueError):
    """An Arrow list column does not have the fixed shape the contract promises."""


def nested_to_numpy(arr: pa.Array | pa.ChunkedArray, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """A (variable or fixed-size) nested list column as an (n, *shape) array without a per-row Python
    loop; raises ShapeError when a row has nulls or the wrong length at any level."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    values: pa.Array = arr
    for depth, size in enumerate(shape):
        if values.null_count:
            raise ShapeError(f"null entries at nesting level {depth}")
        if not (
            pa.types.is_list(values.type)
            or pa.types.is_large_list(values.type)
            or pa.types.is_fixed_size_list(values.type)
        ):
            raise ShapeError(f"expected a list at nesting level {depth}, found {values.type}")
        if len(values):
            lengths = pc.list_value_length(values)
            lo, hi = pc.min_max(lengths).values()
            if lo.as_py() != size or hi.as_py() != size:
                raise ShapeError(f"lists at nesting level {depth} have {lo}..{hi} entries, expected {size}")
        values = values.flatten()
    if values.null_count:
        raise ShapeError("null values")
    out = values.to_numpy(zero_copy_only=False)
    if out.dtype != dtype:
        out = out.astype(dtype)
    return out.reshape((n, *shape))


def numpy_to_nested(a: np.ndarray) -> pa.Array:
    """An (n, d1, ..., dk) array as k levels of Arrow lists (what Spark's ArrayType maps to)."""
    a = np.ascontiguousarray(a)
    if a.size >= 2**31:
        raise ValueError(f"{a.shape} is too large for one Arrow batch (32-bit offsets); use smaller batches")
    values: pa.Array = pa.array(a.reshape(-1))
    for level in range(a.ndim - 1, 0, -1):
        rows = int(np.prod(a.shape[:level]))
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * np.int32(a.shape[level]))
        values = pa.ListArray.from_arrays(offsets, values)
    return values


def one_hot(labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """float32 one-hot rows; label k -> 1 at index k (label 0 -> [1, 0, 0])."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.zeros((labels.shape[0], n_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out
