"""The two particle layouts of a prepared set (jobs.dltrigger_schema.PARTICLE_LAYOUTS) give the model
the same tensors: one small ingested input prepared padded and ragged, each read back through
tf.data from Parquet and from TFRecord shards, padded (unbucketed) and bucketed, batch for batch, bit
for bit; the ragged files store only the real rows."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.fixtures.ingested import generate_events, write_ingested
from jobs.core.errors import UsageError
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    GRU_COLUMN,
    LAYOUT_SUMMARY_KEY,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    layout_of,
)
from jobs.prepare import job as prepare
from jobs.prepare.scaling import Scaler
from jobs.tfrecords import job as tfrecords

LAYOUTS = ("padded", "ragged")


@pytest.fixture(scope="module")
def sets(spark, tmp_path_factory) -> dict[str, dict[str, str]]:
    """{layout: {"parquet": prepared dir, "tfrecord": shards dir}} from one ingested input."""
    base = tmp_path_factory.mktemp("layouts")
    write_ingested(str(base / "ingest"), {0: 24, 1: 30, 2: 27}, seed=5, events_per_file=12)
    out = {}
    for layout in LAYOUTS:
        prepared, shards = str(base / f"prepared-{layout}"), str(base / f"tfr-{layout}")
        prepare.run(str(base / "ingest"), prepared, spark=spark, shuffle_partitions=2, layout=layout)
        tfrecords.run(prepared, shards, compression="none", spark=spark)
        out[layout] = {"parquet": prepared, "tfrecord": shards}
    return out


def batches(url: str, fmt: str, bucketing: bool) -> list[tuple[dict, np.ndarray]]:
    from jobs.core.tf_dataset import make_dataset

    ds = make_dataset(url, fmt, batch_size=8, bucketing=bucketing, keep_n_particles=True)
    return [({k: v.numpy() for k, v in x.items()}, y.numpy()) for x, y in ds]


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
@pytest.mark.parametrize("bucketing", [False, True], ids=["padded-batches", "bucketed"])
def test_both_layouts_give_the_same_batches(sets, fmt, bucketing):
    for split in ("train", "test"):
        got = {k: batches(os.path.join(sets[k][fmt], split), fmt, bucketing) for k in LAYOUTS}
        assert len(got["padded"]) == len(got["ragged"]) > 0
        for (xp, yp), (xr, yr) in zip(got["padded"], got["ragged"], strict=True):
            assert xp.keys() == xr.keys()
            for key in xp:
                assert xp[key].shape == xr[key].shape
                np.testing.assert_array_equal(xp[key].view(np.uint8), xr[key].view(np.uint8))
            np.testing.assert_array_equal(yp, yr)
        if not bucketing:
            assert got["padded"][0][0][GRU_COLUMN].shape[1:] == (N_PARTICLES, N_PARTICLE_FEATURES)


def test_ragged_stores_only_the_real_rows(sets):
    sizes = {}
    for layout in LAYOUTS:
        prepared = sets[layout]["parquet"]
        files = sorted(os.listdir(os.path.join(prepared, "train")))
        table = pq.read_table(os.path.join(prepared, "train", files[0]))
        assert layout_of(table.schema) == layout
        rows = table[GRU_COLUMN].combine_chunks()
        lengths = np.diff(rows.offsets.to_numpy())
        expected = table[COUNT_COLUMN].to_numpy() if layout == "ragged" else N_PARTICLES
        np.testing.assert_array_equal(lengths, expected)
        for d in ("parquet", "tfrecord"):
            with open(os.path.join(sets[layout][d], "_summary.json")) as f:
                assert json.load(f)[LAYOUT_SUMMARY_KEY] == layout
        sizes[layout] = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, names in os.walk(sets[layout]["tfrecord"])
            for f in names
            if ".tfrecord" in f
        )
    assert sizes["ragged"] * 5 < sizes["padded"]  # uncompressed: real rows only


def test_transform_rows_equals_the_dense_transform():
    """The row-wise global transform the tasks use is the reference-exact dense one, bit for bit."""
    from jobs.core.tensors import pad_rows
    from jobs.prepare.scaling import FitStats

    hlf, particles = generate_events(40, label=1, seed=3)
    scaler = Scaler.fit(FitStats.of(hlf, particles.reshape(-1, N_PARTICLE_FEATURES)), "global", "all")
    dense = scaler.transform(hlf, particles, np.ones(len(hlf), dtype=np.int64))
    flat, lengths = particles.reshape(-1, N_PARTICLE_FEATURES), np.full(len(hlf), N_PARTICLES)
    hlf_s, rows, n_real = scaler.transform_rows(hlf, flat, lengths)
    np.testing.assert_array_equal(hlf_s, dense["HLF_input"])
    np.testing.assert_array_equal(n_real, dense["n_particles"])
    np.testing.assert_array_equal(pad_rows(rows, n_real, N_PARTICLES).view(np.uint32),
                                  dense["GRU_input"].view(np.uint32))  # fmt: skip


def test_ragged_with_per_event_scaling_is_refused(tmp_path):
    with pytest.raises(UsageError, match="--layout ragged needs --particle-scaling global"):
        prepare.run(
            str(tmp_path / "in"), str(tmp_path / "out"), particle_scaling="per-event", layout="ragged"
        )
    assert prepare.resolve_layout("auto", "per-event") == "padded"
    assert prepare.resolve_layout("auto", "global") == "ragged"
    assert not os.path.exists(tmp_path / "out")


def test_either_ingestion_layout_gives_the_same_prepared_set(tmp_path):
    """The same events ingested padded (zero rows between the particle blocks) and ragged (the real
    rows only) give the same prepared set on the process executor, bit for bit: the fit round works on
    the rows as stored, and its cache keeps each event up to its last real row."""
    tables = {}
    for ingested in LAYOUTS:
        source = str(tmp_path / f"ingest-{ingested}")
        write_ingested(source, {0: 24, 1: 30, 2: 27}, seed=5, events_per_file=12, layout=ingested)
        out = tmp_path / f"prepared-from-{ingested}"
        prepare.run(source, str(out), engine="processes", master="local[2]", shuffle_partitions=2)
        tables[ingested] = {split: pq.read_table(out / split).to_pylist() for split in ("train", "test")}
        assert json.loads((out / "_scaler.json").read_text()) == json.loads(
            (tmp_path / "prepared-from-padded" / "_scaler.json").read_text()
        )
    assert tables["padded"]["train"] and tables["padded"]["test"]
    assert tables["padded"] == tables["ragged"]
