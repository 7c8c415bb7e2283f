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


def rows_to_ragged(rows: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """(R, k) float32 rows of n events, event i owning `lengths[i]` consecutive rows, as
    list<fixed_size_list<float32, k>> (the ragged particle layout): no copy beyond the float32 cast."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] != rows.shape[0]:
        raise ValueError(f"{rows.shape[0]} rows for lengths summing to {offsets[-1]}")
    if offsets[-1] >= 2**31:
        raise ValueError("too many rows for one Arrow batch (32-bit offsets); use smaller batches")
    inner = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), inner)


def ragged_to_rows(
    arr: pa.Array | pa.ChunkedArray, width: int, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """A ragged particle column (list<fixed_size_list<float, width>>) as its (R, width) float32 rows
    and the (n,) int64 row count of each event, read from the Arrow buffers (no per-row work);
    raises ShapeError on nulls, another inner width or more than `max_rows` rows in an event."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_fixed_size_list(
        t.value_type
    ):
        raise ShapeError(f"expected list<fixed_size_list<float, {width}>>, found {t}")
    if t.value_type.list_size != width:
        raise ShapeError(f"particle rows have {t.value_type.list_size} features, expected {width}")
    if arr.null_count:
        raise ShapeError("null entries at nesting level 0")
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.diff(offsets)
    if len(lengths) and lengths.max() > max_rows:
        raise ShapeError(f"an event has {int(lengths.max())} particle rows, more than {max_rows}")
    inner = arr.values.slice(offsets[0], offsets[-1] - offsets[0]) if len(arr) else arr.values.slice(0, 0)
    if inner.null_count:
        raise ShapeError("null entries at nesting level 1")
    values = inner.flatten()
    if values.null_count:
        raise ShapeError("null values")
    flat = values.to_numpy(zero_copy_only=False)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    return flat.reshape(-1, width), lengths


def row_events(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For flat rows of events with `lengths` rows each: each row's event, and each event's first row."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.repeat(np.arange(len(lengths)), lengths), starts


def pad_rows(rows: np.ndarray, lengths: np.ndarray, n_rows: int) -> np.ndarray:
    """(R, k) rows of events with `lengths` rows each -> (n, n_rows, k), real rows first, zeros after."""
    out = np.zeros((len(lengths), n_rows, rows.shape[1]), dtype=rows.dtype)
    out[np.arange(n_rows)[None, :] < np.asarray(lengths)[:, None]] = rows
    return out


def _is_ragged(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_fixed_size_list(t.value_type)


def particles_to_numpy(arr: pa.Array | pa.ChunkedArray, n_rows: int, width: int) -> np.ndarray:
    """A prepared set's particle column in either layout (jobs.dltrigger_schema.PARTICLE_LAYOUTS) as
    (n, n_rows, width): ragged rows zero-padded, padded lists checked and reshaped."""
    if _is_ragged(arr.type):
        rows, lengths = ragged_to_rows(arr, width, n_rows)
        return pad_rows(rows, lengths, n_rows)
    return nested_to_numpy(arr, (n_rows, width))


def particle_rows(arr: pa.Array | pa.ChunkedArray, n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A particle column in either layout as flat (R, width) rows and each event's row count: the
    ragged rows as stored, or all `n_rows` rows of each padded event (no zero-padding made up for the
    ragged layout, whose events hold a tenth of 801 rows)."""
    if _is_ragged(arr.type):
        return ragged_to_rows(arr, width, n_rows)
    dense = nested_to_numpy(arr, (n_rows, width))
    return dense.reshape(-1, width), np.full(len(dense), n_rows, dtype=np.int64)
