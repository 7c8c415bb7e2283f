"""jobs.prepare on small synthetic ingestion outputs, through the real local Spark session: exact
undersampling, a disjoint seeded split, the shuffle, HLF scaling, both particle scalings checked
against independent per-event implementations (sklearn's StandardScaler for the reference mode), the
scaler reused on new events, and bad input."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from bench.fixtures.ingested import generate_events, ingested_table, write_ingested
from jobs.core.errors import BadInputError, UsageError
from jobs.core.tensors import nested_to_numpy, numpy_to_nested, particles_to_numpy
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    ETA,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    PHI,
)
from jobs.prepare import job as prepare
from jobs.prepare.scaling import load_scaler
from tests.conftest import ROOT as REPO_ROOT

REPO = str(REPO_ROOT)
COUNTS = {0: 40, 1: 90, 2: 60}
N_MIN = min(COUNTS.values())


def read_raw(directory: str) -> dict[tuple[str, int], dict]:
    """Every ingested event keyed by (source_file, entry)."""
    files = sorted(glob.glob(os.path.join(directory, "label=*", "*.parquet")))
    table = pads.dataset(
        files, format="parquet", partitioning="hive", partition_base_dir=directory
    ).to_table()
    hlf = nested_to_numpy(table["hfeatures"], (N_HLF,))
    particles = nested_to_numpy(table["particles"], (N_PARTICLES, N_PARTICLE_FEATURES))
    ids = zip(table["source_file"].to_pylist(), table["entry"].to_pylist(), strict=True)
    labels = table["label"].to_numpy()
    return {k: {"hlf": hlf[i], "particles": particles[i], "label": int(labels[i])} for i, k in enumerate(ids)}


def read_split(out: str, split: str) -> dict[str, np.ndarray]:
    """A prepared split in file order (the training set's shuffled order)."""
    files = sorted(f for f in os.listdir(os.path.join(out, split)) if f.endswith(".parquet"))
    table = pa.concat_tables([pq.read_table(os.path.join(out, split, f)) for f in files])
    return {
        "ids": list(zip(table["source_file"].to_pylist(), table["entry"].to_pylist(), strict=True)),
        "hlf": nested_to_numpy(table[HLF_COLUMN], (N_HLF,)),
        "gru": particles_to_numpy(table[GRU_COLUMN], N_PARTICLES, N_PARTICLE_FEATURES),
        "label": nested_to_numpy(table[LABEL_COLUMN], (3,)),
        "n": table[COUNT_COLUMN].to_numpy(),
    }


def summary(out: str) -> dict:
    with open(os.path.join(out, "_summary.json")) as f:
        return json.load(f)


def delta_r(eta1: float, phi1: float, eta2: float, phi2: float) -> float:
    """The reference's scalar ΔR (while-loop φ wrap), independent of jobs.core.physics."""
    dphi = phi1 - phi2
    while dphi > math.pi:
        dphi -= 2 * math.pi
    while dphi < -math.pi:
        dphi += 2 * math.pi
    return math.sqrt((eta1 - eta2) ** 2 + dphi**2)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("ingested") / "ingest")
    write_ingested(d, COUNTS, seed=3, events_per_file=25)
    return d


@pytest.fixture(scope="module")
def runs(spark, ingested, tmp_path_factory) -> dict[str, str]:
    """Four preparations of the same input: default twice, another seed, the reference mode."""
    base = tmp_path_factory.mktemp("prepared")
    out = {}
    for name, kwargs in {
        "a": {},
        "a_again": {},
        "other_seed": {"seed": 7},
        "reference": {"particle_scaling": "per-event", "scaler_fit": "all"},
    }.items():
        out[name] = str(base / name)
        prepare.run(ingested, out[name], spark=spark, shuffle_partitions=2, **kwargs)
    return out


def parts(out: str) -> dict[str, pa.Table]:
    """Every Parquet part of a prepared set by its path inside the set."""
    found = glob.glob(f"{out}/*/*.parquet")
    return {os.path.relpath(f, out): pq.read_table(f) for f in sorted(found)}


def test_worker_processes_write_what_spark_writes(runs, ingested, tmp_path, monkeypatch):
    """The engine seam: undersampling (two map/reduce rounds), the fit and the shuffle on worker
    processes give the same files, rows in the same order and the same summary as on Spark; the
    tasks of every round reach the event log; the input is read by the undersampling and fit rounds
    only (the fit round's kept events wait on this machine for the transform round), not again as on
    Spark: here the input folder is moved away as soon as the fit round ends."""
    from jobs.core.engine import ProcessExecutor

    out, logs, away = str(tmp_path / "processes"), tmp_path / "events", f"{ingested}-away"
    rounds_run = ProcessExecutor._run

    def then_hide_input(self, items, fn, name):
        done = rounds_run(self, items, fn, name)
        if name == "fit":
            os.rename(ingested, away)
        return done

    monkeypatch.setattr(ProcessExecutor, "_run", then_hide_input)
    try:
        where = {"engine": "processes", "master": "local[2]", "event_log_dir": str(logs)}
        metrics = prepare.run(ingested, out, shuffle_partitions=2, **where)
    finally:
        os.rename(away, ingested)
    assert metrics["spark"]["engine"] == "processes" and metrics["spark"]["workers"] == 2
    mine, theirs = parts(out), parts(runs["a"])
    assert sorted(mine) == sorted(theirs) and len(mine) > 4
    for name, table in theirs.items():
        assert mine[name].equals(table), name
    assert summary(out)["splits"] == summary(runs["a"])["splits"]
    assert open(f"{out}/_scaler.json").read() == open(f"{runs['a']}/_scaler.json").read()
    events = [json.loads(line) for line in (logs / metrics["spark"]["app_id"]).read_text().splitlines()]
    stages = [e["Stage Info"]["Stage Name"] for e in events if e["Event"] == "SparkListenerStageCompleted"]
    rounds = ("undersampling histogram", "undersampling threshold", "fit", "shuffle write", "shuffle read")
    assert stages == [f"colliderflow-prepare {s}" for s in rounds]
    fit = [e for e in events if e["Event"] == "SparkListenerTaskEnd" and e["Stage ID"] == 2]
    assert sum(e["Task Metrics"]["Input Metrics"]["Records Read"] for e in fit) == sum(COUNTS.values())
    assert {e["Task Info"]["colliderflow.input"] for e in fit} == set(glob.glob(f"{ingested}/*/*.parquet"))


@pytest.fixture(scope="module")
def raw(ingested) -> dict:
    return read_raw(ingested)


def test_undersampling_exact_and_summary(runs):
    s = summary(runs["a"])
    assert s["per_class_before"] == {str(k): v for k, v in COUNTS.items()}
    assert s["per_class_after"] == {str(k): N_MIN for k in COUNTS}
    train, test = read_split(runs["a"], "train"), read_split(runs["a"], "test")
    for split, data in (("train", train), ("test", test)):
        per_class = np.bincount(data["label"].argmax(axis=1), minlength=3)
        assert per_class.tolist() == [s["splits"][split]["per_class"][str(k)] for k in range(3)]
        assert len(data["ids"]) == s["splits"][split]["events"]
    kept = np.bincount(np.concatenate([train["label"], test["label"]]).argmax(axis=1), minlength=3)
    assert kept.tolist() == [N_MIN] * 3
    assert sorted(os.listdir(runs["a"])) == [
        "_COLLIDERFLOW", "_SUCCESS", "_metrics.json", "_scaler.json", "_summary.json", "test", "train",
    ]  # fmt: skip
    with open(os.path.join(runs["a"], "_metrics.json")) as f:
        m = json.load(f)
    assert (
        m["stage"] == "prepare" and m["events"] == sum(COUNTS.values()) and m["events_written"] == 3 * N_MIN
    )


def test_split_disjoint_near_fraction_and_from_input(runs, raw):
    train, test = read_split(runs["a"], "train"), read_split(runs["a"], "test")
    train_ids, test_ids = set(train["ids"]), set(test["ids"])
    assert len(train_ids) == len(train["ids"]) and len(test_ids) == len(test["ids"])  # no duplicates
    assert not train_ids & test_ids
    assert (train_ids | test_ids) <= set(raw)
    # the split is a per-event Bernoulli(0.2) draw: 3*40 events, 5 sigma is about +-22
    assert abs(len(test_ids) - 0.2 * 3 * N_MIN) < 5 * math.sqrt(3 * N_MIN * 0.2 * 0.8)
    # labels travel with their events
    for i, key in enumerate(train["ids"]):
        assert train["label"][i].argmax() == raw[key]["label"]


def test_same_seed_same_output_other_seed_other_split(runs):
    a, again, other = (
        {s: read_split(runs[r], s) for s in ("train", "test")} for r in ("a", "a_again", "other_seed")
    )
    assert a["train"]["ids"] == again["train"]["ids"]  # same events in the same shuffled order
    assert a["test"]["ids"] == again["test"]["ids"]
    assert np.array_equal(a["train"]["gru"], again["train"]["gru"])
    assert set(a["test"]["ids"]) != set(other["test"]["ids"])
    kept = set(a["train"]["ids"]) | set(a["test"]["ids"])
    kept_other = set(other["train"]["ids"]) | set(other["test"]["ids"])
    assert kept != kept_other  # the larger classes are undersampled differently
    qcd = {k for k in kept if k[0].startswith("synthetic://class0/")}
    assert len(qcd) == N_MIN and qcd <= kept_other  # the smallest class is kept whole either way


def test_training_set_is_shuffled(runs):
    train = read_split(runs["a"], "train")
    labels = train["label"].argmax(axis=1)
    changes = int((labels[1:] != labels[:-1]).sum())
    # class blocks would give 2 changes; a random order of 3 balanced classes about 2/3 of the rows
    assert changes > len(labels) / 3
    assert train["ids"] != sorted(train["ids"])


def test_hlf_min_max_fitted_on_training_split(runs, raw):
    train, test = read_split(runs["a"], "train"), read_split(runs["a"], "test")
    assert train["hlf"].min() >= 0.0 and train["hlf"].max() <= 1.0
    raw_train = np.stack([raw[k]["hlf"] for k in train["ids"]]).astype(np.float64)
    lo, hi = raw_train.min(axis=0), raw_train.max(axis=0)
    scaler = json.load(open(os.path.join(runs["a"], "_scaler.json")))
    assert (
        scaler["fit_on"] == "train" and scaler["hlf_min"] == lo.tolist() and scaler["hlf_max"] == hi.tolist()
    )
    span = hi - lo
    varying = span > 0
    expected = np.where(varying, (raw_train - lo) / np.where(varying, span, 1), 0.5).astype(np.float32)
    np.testing.assert_array_equal(train["hlf"], expected)
    assert np.all(train["hlf"][:, varying].min(axis=0) == 0) and np.all(
        train["hlf"][:, varying].max(axis=0) == 1
    )
    raw_test = np.stack([raw[k]["hlf"] for k in test["ids"]]).astype(np.float64)
    np.testing.assert_allclose(test["hlf"][:, varying], ((raw_test - lo) / span)[:, varying], rtol=1e-6)


def test_global_mode_real_first_by_delta_r_padding_zero(runs, raw):
    train = read_split(runs["a"], "train")
    scaler = load_scaler(os.path.join(runs["a"], "_scaler.json"))
    mean, std = np.asarray(scaler.particle_mean), np.asarray(scaler.particle_std)
    rows = np.arange(N_PARTICLES)[None, :]
    padded = rows >= train["n"][:, None]
    assert np.all(train["gru"][padded] == 0.0)  # exactly zero, every feature
    assert np.all(np.any(train["gru"][~padded] != 0.0, axis=1))
    # the training set's real rows are standardised with its own statistics
    real = train["gru"][~padded].astype(np.float64)
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(real.std(axis=0)[std != 1.0], 1.0, rtol=1e-4)
    for i in range(0, len(train["ids"]), 9):  # an independent per-event check on a subset
        p = raw[train["ids"][i]]["particles"]
        real_rows = [r for r in p if np.any(r != 0)]
        assert train["n"][i] == len(real_rows)
        lep = p[0]
        expected = sorted(real_rows, key=lambda r: delta_r(lep[ETA], lep[PHI], r[ETA], r[PHI]), reverse=True)
        unscaled = train["gru"][i, : train["n"][i]] * std + mean
        np.testing.assert_allclose(unscaled, np.stack(expected), rtol=1e-5, atol=1e-4)
        drs = [delta_r(lep[ETA], lep[PHI], r[ETA], r[PHI]) for r in unscaled]
        assert all(a >= b - 1e-4 for a, b in zip(drs, drs[1:], strict=False))  # descending


def test_per_event_reference_mode_matches_sklearn(runs, raw):
    from sklearn.preprocessing import StandardScaler

    out = read_split(runs["reference"], "train")
    with open(os.path.join(runs["reference"], "_scaler.json")) as f:
        scaler = json.load(f)
    assert scaler["particle_scaling"] == "per-event" and scaler["particle_mean"] is None
    for i in range(0, len(out["ids"]), 11):
        p = raw[out["ids"][i]]["particles"].astype(np.float64)
        lep = p[0]
        rows = sorted(list(p), key=lambda r: delta_r(lep[ETA], lep[PHI], r[ETA], r[PHI]), reverse=True)
        expected = StandardScaler().fit_transform(np.stack(rows))
        np.testing.assert_allclose(out["gru"][i], expected, rtol=1e-5, atol=1e-5)
        assert out["n"][i] == int(np.any(p != 0, axis=1).sum())  # still the true count
    # the documented consequence: no padded row stays zero, so Masking(0.) masks nothing
    assert not np.any(np.all(out["gru"] == 0.0, axis=2))


def test_scaler_fit_all_uses_every_ingested_event(runs, raw):
    with open(os.path.join(runs["reference"], "_scaler.json")) as f:
        scaler = json.load(f)
    every = np.stack([v["hlf"] for v in raw.values()]).astype(np.float64)
    assert scaler["fit_on"] == "all" and scaler["fit_events"] == sum(COUNTS.values())
    assert scaler["hlf_min"] == every.min(axis=0).tolist() and scaler["hlf_max"] == every.max(axis=0).tolist()


def test_saved_scaler_reproduces_the_test_split(runs, raw):
    """What evaluation does with _scaler.json: the same transform on raw events gives the same bits."""
    test = read_split(runs["a"], "test")
    scaler = load_scaler(os.path.join(runs["a"], "_scaler.json"))
    hlf = np.stack([raw[k]["hlf"] for k in test["ids"]])
    particles = np.stack([raw[k]["particles"] for k in test["ids"]])
    labels = np.array([raw[k]["label"] for k in test["ids"]])
    got = scaler.transform(hlf, particles, labels)
    for col, key in ((HLF_COLUMN, "hlf"), (GRU_COLUMN, "gru"), (LABEL_COLUMN, "label"), (COUNT_COLUMN, "n")):
        np.testing.assert_array_equal(got[col], test[key])


# --- bad input ---------------------------------------------------------------------------------


def _write_table(path: str, table: pa.Table) -> None:
    """One file of a hand-made ingestion output DIR/label=K/FILE, marked complete (DIR/_SUCCESS)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
    open(os.path.join(os.path.dirname(os.path.dirname(path)), "_SUCCESS"), "w").close()


def test_wrong_schema_is_named(spark, tmp_path):
    hlf, particles = generate_events(5, 0, seed=1)
    table = ingested_table(hlf, particles, "f.root").drop_columns(["particles"])
    _write_table(str(tmp_path / "in" / "label=0" / "part-0.parquet"), table)
    with pytest.raises(BadInputError, match="missing column.*particles"):
        prepare.run(str(tmp_path / "in"), str(tmp_path / "out"), spark=spark)
    flat = ingested_table(hlf, particles, "f.root").set_column(
        1, "particles", pa.array([[1.0, 2.0]] * 5, pa.list_(pa.float32()))
    )
    _write_table(str(tmp_path / "in2" / "label=0" / "part-0.parquet"), flat)
    with pytest.raises(
        BadInputError, match=r"column particles is array<float>, expected array<array<float>>"
    ):
        prepare.run(str(tmp_path / "in2"), str(tmp_path / "out"), spark=spark)
    assert not os.path.exists(tmp_path / "out")


def test_empty_input(spark, tmp_path):
    os.makedirs(tmp_path / "nothing")
    with pytest.raises(BadInputError, match="holds no .parquet file"):
        prepare.run(str(tmp_path / "nothing"), str(tmp_path / "out"), spark=spark)
    hlf, particles = generate_events(1, 0, seed=1)
    empty = ingested_table(hlf, particles, "f.root").slice(0, 0)
    for k in range(3):
        _write_table(str(tmp_path / "zero" / f"label={k}" / "part-0.parquet"), empty)
    with pytest.raises(BadInputError, match="holds no events"):
        prepare.run(str(tmp_path / "zero"), str(tmp_path / "out"), spark=spark)
    with pytest.raises(BadInputError, match="no such directory"):
        prepare.run(str(tmp_path / "absent"), str(tmp_path / "out"), spark=spark)


def test_missing_class(spark, tmp_path):
    write_ingested(str(tmp_path / "in"), {0: 5, 2: 5}, events_per_file=5)
    with pytest.raises(BadInputError, match=r"class\(es\) 1 \(ttbar\) have no events"):
        prepare.run(str(tmp_path / "in"), str(tmp_path / "out"), spark=spark)


def test_wrong_particle_count_names_the_file(spark, tmp_path):
    write_ingested(str(tmp_path / "in"), {0: 6, 1: 6, 2: 6}, events_per_file=6)
    hlf, particles = generate_events(6, 1, seed=5)
    bad = str(tmp_path / "in" / "label=1" / "part-00000.parquet")
    table = ingested_table(hlf, particles[:, :801], "bad.root")  # then one particle row too few:
    table = table.set_column(1, "particles", numpy_to_nested(particles[:, :800]))
    pq.write_table(table, bad)
    with pytest.raises(BadInputError, match=r"part-00000\.parquet.*expected 801"):
        prepare.run(str(tmp_path / "in"), str(tmp_path / "out"), spark=spark, test_fraction=0.5)


def test_usage_errors_and_cli(tmp_path):
    with pytest.raises(UsageError, match="--test-fraction"):
        prepare.run(str(tmp_path), str(tmp_path / "out"), test_fraction=1.0)
    env = {**os.environ, "PYTHONPATH": REPO}
    help_ = subprocess.run(
        [sys.executable, "-m", "jobs.prepare", "--help"], capture_output=True, text=True, env=env
    )
    assert help_.returncode == 0 and "--particle-scaling" in help_.stdout and "--scaler-fit" in help_.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "jobs.prepare", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
         "--test-fraction", "2"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "--test-fraction" in bad.stderr


def test_label_column_in_files_and_global_fit_on_all(spark, tmp_path):
    """Files that also carry `label` are read the same way; --scaler-fit all with global scaling fits
    the particle statistics on every real row of every ingested event."""
    counts = {0: 12, 1: 9, 2: 15}
    write_ingested(str(tmp_path / "in"), counts, seed=4, events_per_file=5, label_in_files=True)
    out = str(tmp_path / "out")
    prepare.run(str(tmp_path / "in"), out, spark=spark, scaler_fit="all", test_fraction=0.3)
    assert summary(out)["per_class_after"] == {"0": 9, "1": 9, "2": 9}
    raw = read_raw(str(tmp_path / "in"))
    particles = np.stack([v["particles"] for v in raw.values()]).astype(np.float64)
    real = particles[np.any(particles != 0, axis=2)]
    scaler = load_scaler(os.path.join(out, "_scaler.json"))
    assert scaler.fit_on == "all" and scaler.fit_events == sum(counts.values())
    assert scaler.fit_particle_rows == len(real)
    np.testing.assert_allclose(scaler.particle_mean, real.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaler.particle_std, real.std(axis=0), rtol=1e-9)
