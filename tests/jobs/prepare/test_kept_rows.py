"""The fit round's cache of kept events (jobs.prepare.kept_rows): what it stores of each event, from
either ingestion layout, and that the transform round gets the events back as read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.core.tensors import pad_rows
from jobs.dltrigger_schema import N_PARTICLE_FEATURES, N_PARTICLES
from jobs.prepare.kept_rows import Kept, KeptWriter, read_kept, up_to_last_nonzero


def padded_events(n: int, seed: int) -> np.ndarray:
    """(n, 801, 19) with real rows first, some exact-zero rows among them and some empty events."""
    rng = np.random.default_rng(seed)
    p = np.zeros((n, N_PARTICLES, N_PARTICLE_FEATURES), np.float32)
    for i in range(n):
        k = int(rng.integers(0, 300)) if i % 7 else 0
        p[i, :k] = rng.normal(size=(k, N_PARTICLE_FEATURES))
        p[i, rng.integers(0, max(k, 1), 3)] = 0  # zero rows inside the real ones stay
    return p


def last_nonzero_dense(p: np.ndarray) -> np.ndarray:
    nonzero = np.any(p != 0, axis=2)
    return np.where(nonzero.any(axis=1), N_PARTICLES - np.argmax(nonzero[:, ::-1], axis=1), 0)


def test_rows_up_to_the_last_nonzero_one_from_either_layout():
    p = padded_events(60, seed=1)
    expected_lengths = last_nonzero_dense(p)
    expected_rows = p[np.arange(N_PARTICLES)[None, :] < expected_lengths[:, None]]
    padded = up_to_last_nonzero(p.reshape(-1, N_PARTICLE_FEATURES), np.full(len(p), N_PARTICLES))
    ragged = up_to_last_nonzero(expected_rows, expected_lengths)  # already trimmed: unchanged
    for rows, lengths in (padded, ragged):
        np.testing.assert_array_equal(lengths, expected_lengths)
        np.testing.assert_array_equal(rows, expected_rows)


def test_kept_events_come_back_as_read(tmp_path):
    p = padded_events(20, seed=2)
    n = len(p)
    kept = Kept(
        hlf=np.arange(n * 14, dtype=np.float32).reshape(n, 14),
        rows=p.reshape(-1, N_PARTICLE_FEATURES),
        lengths=np.full(n, N_PARTICLES),
        source_file=pa.array([f"f{i}" for i in range(n)]),
        entry=pa.array(np.arange(n, dtype=np.int64)),
        is_test=np.arange(n) % 3 == 0,
        shuffle=np.arange(n, dtype=np.int64)[::-1].copy(),
    )
    writer = KeptWriter(str(tmp_path / "kept.arrow"))
    writer.write(kept)
    writer.close()
    (back,) = read_kept(str(tmp_path / "kept.arrow"))
    np.testing.assert_array_equal(back.particles, p)
    np.testing.assert_array_equal(pad_rows(back.rows, back.lengths, N_PARTICLES), p)
    np.testing.assert_array_equal(back.hlf, kept.hlf)
    np.testing.assert_array_equal(back.is_test, kept.is_test)
    np.testing.assert_array_equal(back.shuffle, kept.shuffle)
    assert back.entry.to_pylist() == list(range(n))
