"""jobs.tfrecords and the TensorFlow-free encoder in jobs.tfrecords.example, checked against real
TensorFlow: the hand-encoded protos parse as the same tf.train.Example, the framing equals
tf.io.TFRecordWriter's byte for byte, and a prepared set read back through tf.data
(jobs.core.tf_readers) equals its Parquet values bit for bit, shard by shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.fixtures.ingested import write_ingested
from jobs.core.errors import BadInputError, UsageError
from jobs.core.tensors import nested_to_numpy, one_hot, particles_to_numpy
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    SHAPES,
)
from jobs.prepare import job as prepare
from jobs.tfrecords import job as tfrecords
from jobs.tfrecords.example import ShardWriter, encode_examples, frame_record
from tests.conftest import ROOT as REPO_ROOT

REPO = str(REPO_ROOT)


def awkward_values(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random rows plus the float32 values an encoder gets wrong first: -0, subnormals, inf, nan."""
    rng = np.random.default_rng(seed)
    hlf = rng.normal(size=(n, N_HLF)).astype(np.float32)
    gru = np.zeros((n, N_PARTICLES, N_PARTICLE_FEATURES), dtype=np.float32)
    gru[:, :50] = rng.normal(scale=100, size=(n, 50, N_PARTICLE_FEATURES))
    hlf[0, :5] = [-0.0, np.float32(1e-45), np.inf, -np.inf, np.nan]
    gru[0, 0, :3] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0]
    label = one_hot(np.arange(n) % 3)
    counts = np.array([0, 1, 127, 128, 801, 2**40][:n] + [5] * max(0, n - 6), dtype=np.int64)
    return hlf, gru, label, counts


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_encoding_matches_tf_train_example():
    import tensorflow as tf

    hlf, gru, label, counts = awkward_values(6)
    for i, raw in enumerate(encode_examples(hlf, gru, label, counts)):
        parsed = tf.train.Example.FromString(raw)
        f = parsed.features.feature
        assert set(f) == {HLF_COLUMN, GRU_COLUMN, LABEL_COLUMN, COUNT_COLUMN}
        np.testing.assert_array_equal(bits(np.array(f[HLF_COLUMN].float_list.value)), bits(hlf[i]))
        np.testing.assert_array_equal(
            bits(np.array(f[GRU_COLUMN].float_list.value)), bits(gru[i].reshape(-1))
        )
        np.testing.assert_array_equal(bits(np.array(f[LABEL_COLUMN].float_list.value)), bits(label[i]))
        assert list(f[COUNT_COLUMN].int64_list.value) == [counts[i]]
        reference = tf.train.Example(
            features=tf.train.Features(
                feature={
                    HLF_COLUMN: tf.train.Feature(float_list=tf.train.FloatList(value=hlf[i].tolist())),
                    GRU_COLUMN: tf.train.Feature(
                        float_list=tf.train.FloatList(value=gru[i].reshape(-1).tolist())
                    ),
                    LABEL_COLUMN: tf.train.Feature(float_list=tf.train.FloatList(value=label[i].tolist())),
                    COUNT_COLUMN: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(counts[i])])),
                }
            )
        )
        # same message (NaN compares unequal in protos, so compare the re-serialised parse instead)
        assert tf.train.Example.FromString(reference.SerializeToString()).SerializeToString(
            deterministic=True
        ) == parsed.SerializeToString(deterministic=True)
    without = tf.train.Example.FromString(encode_examples(hlf[:1], gru[:1], label[:1])[0])
    assert COUNT_COLUMN not in without.features.feature


def test_framing_equals_tf_record_writer(tmp_path):
    import tensorflow as tf

    hlf, gru, label, counts = awkward_values(4, seed=1)
    records = encode_examples(hlf, gru, label, counts)
    ours = str(tmp_path / "ours.tfrecord")
    writer = ShardWriter(ours)
    writer.write_all(records)
    assert writer.close() == os.path.getsize(ours) and writer.records == 4
    theirs = str(tmp_path / "theirs.tfrecord")
    with tf.io.TFRecordWriter(theirs) as w:
        for r in records:
            w.write(r)
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert frame_record(b"")[:8] == b"\0" * 8
    gz = str(tmp_path / "ours.tfrecord.gz")
    writer = ShardWriter(gz, compression="gzip")
    writer.write_all(records[:2])
    writer.write_all(records[2:])
    writer.close()
    back = list(tf.data.TFRecordDataset(gz, compression_type="GZIP").as_numpy_iterator())
    assert back == records
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # temporaries renamed away


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("tfr")
    write_ingested(str(base / "ingest"), {0: 30, 1: 45, 2: 36}, seed=11, events_per_file=15)
    prepare.run(str(base / "ingest"), str(base / "prepared"), spark=spark, shuffle_partitions=2)
    return str(base / "prepared")


def parquet_columns(path: str) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    out = {c: nested_to_numpy(table[c], SHAPES[c]) for c in SHAPES if c != GRU_COLUMN}
    out[GRU_COLUMN] = particles_to_numpy(table[GRU_COLUMN], N_PARTICLES, N_PARTICLE_FEATURES)
    out[COUNT_COLUMN] = table[COUNT_COLUMN].to_numpy()
    return out


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_round_trip_bit_for_bit_through_tf_data(spark, prepared, tmp_path, compression):
    from jobs.core.tf_readers import read_tfrecords

    out = str(tmp_path / "tfr")
    metrics = tfrecords.run(prepared, out, compression=compression, spark=spark)
    with open(os.path.join(out, "_summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(prepared, "_summary.json")) as f:
        prepared_summary = json.load(f)
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    total = 0
    for split in ("train", "test"):
        parquet = sorted(f for f in os.listdir(os.path.join(prepared, split)) if f.endswith(".parquet"))
        shards = sorted(os.listdir(os.path.join(out, split)))
        assert shards == [f"part-{i:05d}{suffix}" for i in range(len(parquet))]  # one shard per file
        records = 0
        for pq_name, shard in zip(parquet, shards, strict=True):
            expected = parquet_columns(os.path.join(prepared, split, pq_name))
            got = list(
                read_tfrecords(
                    os.path.join(out, split, shard), include_n_particles=True, num_parallel_calls=1
                )
            )
            assert len(got) == len(expected[HLF_COLUMN])
            for key in (HLF_COLUMN, GRU_COLUMN):
                np.testing.assert_array_equal(
                    bits(np.stack([x[key].numpy() for x, _ in got])), bits(expected[key])
                )
            np.testing.assert_array_equal(
                bits(np.stack([y.numpy() for _, y in got])), bits(expected[LABEL_COLUMN])
            )
            np.testing.assert_array_equal([x[COUNT_COLUMN].numpy() for x, _ in got], expected[COUNT_COLUMN])
            records += len(got)
        assert records == prepared_summary["splits"][split]["events"] == summary["splits"][split]["records"]
        total += records
    assert metrics["events"] == total and metrics["bytes_written"] > 0
    assert os.path.isfile(os.path.join(out, "_scaler.json")) and os.path.isfile(os.path.join(out, "_SUCCESS"))
    # the batched, interleaved reader sees the same multiset of records
    batched = read_tfrecords(os.path.join(out, "train"), batch_size=16, include_n_particles=True)
    assert sum(int(y.shape[0]) for _, y in batched) == summary["splits"]["train"]["records"]


def test_worker_processes_write_the_same_shards_as_spark(spark, prepared, tmp_path):
    """The engine seam: every shard, byte for byte, and the summary are the same on worker processes
    (no JVM) as on Spark."""
    runs = {}
    for engine in ("spark", "processes"):
        out = tmp_path / engine
        kw = {"spark": spark} if engine == "spark" else {"engine": engine, "master": "local[2]"}
        runs[engine] = tfrecords.run(prepared, str(out), **kw)
        assert runs[engine]["spark"].get("engine", "spark") == engine
    for split in ("train", "test"):
        names = sorted(os.listdir(tmp_path / "spark" / split))
        assert names and names == sorted(os.listdir(tmp_path / "processes" / split))
        for name in names:
            a, b = (tmp_path / e / split / name for e in ("spark", "processes"))
            assert a.read_bytes() == b.read_bytes(), f"{split}/{name}"
    summaries = [json.loads((tmp_path / e / "_summary.json").read_text()) for e in ("spark", "processes")]
    assert summaries[0] == summaries[1]


def test_bad_input(spark, prepared, tmp_path):
    with pytest.raises(UsageError, match="--compression"):
        tfrecords.run(prepared, str(tmp_path / "o"), compression="zip", spark=spark)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(BadInputError, match="holds no Parquet file under train/ or test/"):
        tfrecords.run(str(tmp_path / "empty"), str(tmp_path / "o"), spark=spark)
    bad = tmp_path / "bad" / "train"
    os.makedirs(bad)
    table = pq.read_table(
        os.path.join(prepared, "test", sorted(os.listdir(os.path.join(prepared, "test")))[0])
    )
    pq.write_table(table.drop_columns([COUNT_COLUMN]), str(bad / "part-00000.parquet"))
    with pytest.raises(BadInputError, match=r"bad: incomplete output \(no _SUCCESS"):
        tfrecords.run(str(tmp_path / "bad"), str(tmp_path / "o"), spark=spark)
    (tmp_path / "bad" / "_SUCCESS").touch()
    with pytest.raises(BadInputError, match=r"part-00000\.parquet: lacks column\(s\) n_particles"):
        tfrecords.run(str(tmp_path / "bad"), str(tmp_path / "o"), spark=spark)
    assert not os.path.exists(tmp_path / "o")


def test_no_tensorflow_in_the_writers_import_path():
    code = "import sys, jobs.tfrecords, jobs.prepare; sys.exit('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)
    assert done.returncode == 0
    help_ = subprocess.run(
        [sys.executable, "-m", "jobs.tfrecords", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert help_.returncode == 0 and "--compression" in help_.stdout
