"""The ragged particle layout's Arrow <-> numpy helpers (jobs.core.tensors): round trip through
Parquet, padding, and the malformed columns named instead of misread."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.core.tensors import (
    ShapeError,
    numpy_to_nested,
    pad_rows,
    particles_to_numpy,
    ragged_to_rows,
    rows_to_ragged,
)


def test_ragged_round_trip_through_parquet_equals_the_padded_array():
    rng = np.random.default_rng(0)
    lengths = np.array([3, 0, 5, 1, 7])
    rows = rng.normal(size=(lengths.sum(), 4)).astype(np.float32)
    buf = io.BytesIO()
    pq.write_table(pa.table({"g": rows_to_ragged(rows, lengths)}), buf)
    column = pq.read_table(io.BytesIO(buf.getvalue()))["g"]
    back, got_lengths = ragged_to_rows(column.slice(1), 4, 8)  # a slice: offsets not starting at 0
    np.testing.assert_array_equal(got_lengths, lengths[1:])
    np.testing.assert_array_equal(back, rows[3:])
    dense = pad_rows(rows, lengths, 8)
    assert dense.shape == (5, 8, 4) and not dense[1].any() and not dense[0, 3:].any()
    np.testing.assert_array_equal(particles_to_numpy(column, 8, 4), dense)
    np.testing.assert_array_equal(particles_to_numpy(numpy_to_nested(dense), 8, 4), dense)


def test_malformed_ragged_columns_are_named():
    ok = rows_to_ragged(np.ones((6, 4), np.float32), np.array([2, 4]))
    with pytest.raises(ShapeError, match="more than 3"):
        ragged_to_rows(ok, 4, 3)
    with pytest.raises(ShapeError, match="have 4 features, expected 5"):
        ragged_to_rows(ok, 5, 8)
    with pytest.raises(ShapeError, match="expected list<fixed_size_list"):
        ragged_to_rows(pa.array([[1.0, 2.0]]), 4, 8)
    with pytest.raises(ValueError, match="6 rows for lengths summing to 5"):
        rows_to_ragged(np.ones((6, 4), np.float32), np.array([2, 3]))
