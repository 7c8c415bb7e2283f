"""Bucketed batches of jobs.core.tf_dataset.make_dataset on a small synthetic prepared set whose classes
have different particle counts (bench/fixtures/prepared.py): every event once, each batch cut to
its own longest list, training batches with the classes mixed, and the same predictions as the
unbucketed fixed-length batches for the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from bench.fixtures.prepared import generate, write_tfrecords

N_EVENTS, MAX_PARTICLES, BATCH = 384, 48, 32


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory) -> str:
    return write_tfrecords(
        generate(N_EVENTS, seed=5, max_particles=MAX_PARTICLES), str(tmp_path_factory.mktemp("set")), shards=2
    )


def _batches(url: str, **kwargs) -> list[tuple[dict, np.ndarray]]:
    from jobs.core.tf_dataset import make_dataset

    ds = make_dataset(url, "tfrecord", batch_size=BATCH, bucketing=True, keep_n_particles=True, **kwargs)
    return [({k: v.numpy() for k, v in x.items()}, y.numpy()) for x, y in ds]


def _largest_class_share(batches) -> float:
    return max(np.bincount(y.argmax(axis=1), minlength=3).max() / len(y) for _, y in batches)


def test_bucketed_batches_hold_every_event_once_cut_to_their_longest_list(tfrecords):
    data = generate(N_EVENTS, seed=5, max_particles=MAX_PARTICLES)
    for mix in (False, True):
        batches = _batches(tfrecords, shuffle_buffer=128, seed=1, mix_classes=mix)
        assert sum(len(y) for _, y in batches) == N_EVENTS
        assert len(batches) == N_EVENTS // BATCH  # whole windows: no partial batch per bucket
        seen = np.concatenate([x["HLF_input"] for x, _ in batches])
        assert sorted(map(bytes, seen)) == sorted(map(bytes, data.hlf))
        for x, _ in batches:
            gru, n = x["GRU_input"], x["n_particles"]
            assert gru.shape[1] == n.max() < MAX_PARTICLES + 1
            assert np.abs(gru[:, -1]).sum(axis=1)[n == n.max()].all()  # the last row is real
    # a plain length sort groups the short-list class; the class-mixed sort keeps every batch near 1/3
    assert _largest_class_share(_batches(tfrecords, shuffle_buffer=128, seed=1)) > 0.8
    assert _largest_class_share(_batches(tfrecords, shuffle_buffer=128, seed=1, mix_classes=True)) < 0.45


def test_repeated_bucketed_batches_are_full(tfrecords):
    """Multi-worker training repeats the input before windowing: no partial batch at a pass boundary."""
    from jobs.core.tf_dataset import make_dataset

    ds = make_dataset(tfrecords, "tfrecord", batch_size=BATCH, bucketing=True, shuffle_buffer=64, seed=2,
                      repeat=True, mix_classes=True, shard=(1, 2)).take(N_EVENTS // BATCH + 3)  # fmt: skip
    sizes = [int(y.shape[0]) for _, y in ds]
    assert sizes == [BATCH] * (N_EVENTS // BATCH + 3)


def test_bucketed_predictions_equal_unbucketed(tfrecords):
    """Same weights, same events: the masked GRU over a bucketed batch equals the one over the fixed
    padded length (64 rows here; 801 rows equal those, test_masked_gru_ignores_zero_padding)."""
    from jobs.core.model import build_model
    from jobs.core.tf_dataset import make_dataset

    full = build_model(sequence_length=64)
    flexible = build_model(sequence_length=None)
    flexible.set_weights(full.get_weights())

    def scores(model, ds) -> dict[bytes, np.ndarray]:
        out = {}
        for x, _ in ds:
            pred = model({k: x[k] for k in ("GRU_input", "HLF_input")}, training=False).numpy()
            out.update(zip(map(bytes, x["HLF_input"].numpy()), pred, strict=True))
        return out

    unbucketed = scores(full, make_dataset(tfrecords, "tfrecord", batch_size=BATCH, max_particles=64,
                                                   keep_n_particles=True))  # fmt: skip
    bucketed = scores(
        flexible,
        make_dataset(
            tfrecords,
            "tfrecord",
            batch_size=BATCH,
            bucketing=True,
            keep_n_particles=True,
            shuffle_buffer=64,
            seed=3,
            mix_classes=True,
        ),  # fmt: skip
    )
    assert unbucketed.keys() == bucketed.keys() and len(bucketed) == N_EVENTS
    keys = sorted(unbucketed)
    np.testing.assert_allclose(
        np.stack([bucketed[k] for k in keys]), np.stack([unbucketed[k] for k in keys]), rtol=1e-5, atol=1e-6
    )
