"""The cms_dimuon DAG against a real Airflow: import, an end-to-end `airflow dags test` on a small
generated sample, Params rejecting a bad conf before any task runs. (Its real backfill through
`airflow standalone` is in test_backfill.py.)"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import uproot

from tests.dags.conftest import (
    airflow,
    assert_conf_rejected,
    asset_events,
    dags_test,
    environment,
    import_errors,
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> str:
    from jobs.generate import nanoaod

    out = str(tmp_path_factory.mktemp("dimuon") / "nanoaod")
    nanoaod.generate(events=60_000, output=out, files=6, seed=11)
    return out


def test_dags_import_without_errors(airflow_env):
    parsed = import_errors(airflow_env)
    assert parsed["errors"] == {}
    assert "cms_dimuon" in parsed["dags"]


def night(env: dict[str, str], date: str, conf: dict):
    """`airflow dags test cms_dimuon <date>`: the scheduled run of that night, run in place."""
    return airflow(env, "dags", "test", "cms_dimuon", date, "-c", json.dumps(conf), timeout=900)


@pytest.mark.slow
def test_nights_take_only_new_files_and_the_cumulative_adds_up(airflow_env, sample, tmp_path):
    """Three nights on a folder that grows: the first reduces its 4 files, the second only the 2 that
    arrived, the third finds nothing new and succeeds with its stages skipped. The cumulative result
    equals one `jobs.dimuon` run over all 6 files, bin for bin; asset events carry the partition key.
    Then a recorded file changes and its partition, named on the command line, is reprocessed."""
    from jobs.dimuon import job

    inp, runs = tmp_path / "in", tmp_path / "runs"
    inp.mkdir()
    files = sorted(pathlib.Path(sample).glob("*.root"))
    conf = {"input": [str(inp)], "output_root": str(runs)}
    for date, batch in (("2026-03-01", files[:4]), ("2026-03-02", files[4:]), ("2026-03-03", [])):
        for f in batch:
            shutil.copy(f, inp / f.name)
        proc = night(airflow_env, date, conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    quiet = proc.stdout + proc.stderr
    assert "nothing new under" in quiet and "the stages are skipped" in quiet
    run_dirs = sorted(p for p in (runs / "cms_dimuon").iterdir() if p.name.startswith("manual__"))
    # the third night ran no stage; each run's dimuon output holds its night's partition
    assert [[p.name for p in (d / "dimuon" / "partitions").iterdir()] for d in run_dirs] == [
        ["2026-03-01"],
        ["2026-03-02"],
    ]
    read = [json.loads((d / "dimuon" / "_metrics.json").read_text())["files"] for d in run_dirs]
    assert [len(r) for r in read] == [4, 2] and not set(read[0]) & set(read[1])
    out = run_dirs[0] / "dimuon"
    assert {"_SUCCESS", "histograms.root", "cutflow.json", "_metrics.json", "dimuon_mass.png"} <= {
        p.name for p in out.iterdir()
    }
    cumulative = runs / "cms_dimuon" / "cumulative"
    job.run([str(inp)], str(tmp_path / "single"), engine="processes", plot=False)
    with (
        uproot.open(cumulative / "histograms.root") as a,
        uproot.open(tmp_path / "single/histograms.root") as b,
    ):
        for name in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi"):
            assert np.array_equal(a[name].values(), b[name].values()), name
    cuts = json.loads((cumulative / "cutflow.json").read_text())["cuts"]
    assert cuts[0]["events"] == 60_000 and (cumulative / "dimuon_mass.png").exists()
    events = {
        e[1].rsplit("/", 1)[-1]: e[2]
        for e in asset_events(airflow_env)
        if e[2].get("url", "").startswith(str(runs))
    }
    assert events["dimuon"]["partitions"] == ["2026-03-02"] and events["dimuon"]["pairs"] > 0
    # the third night added nothing: its cumulative task found the sum up to date, and says what it holds
    assert events["cumulative"]["events"] == 60_000 and events["cumulative"]["partition_count"] == 2

    # a file of the first night changes: never claimed again, named, its partition marked stale; the
    # named partition, reprocessed from the command line, reads the new content and replaces its share
    changed = inp / files[0].name
    os.utime(changed, (1_800_000_000, 1_800_000_000))
    proc = night(airflow_env, "2026-03-04", conf)
    assert proc.returncode == 0 and "nothing new under" in proc.stdout + proc.stderr
    assert f"{changed} changed after partition 2026-03-01 recorded it" in proc.stdout + proc.stderr
    proc = dags_test(airflow_env, "cms_dimuon", {**conf, "take": "named", "partition_keys": ["2026-03-01"]})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (rerun,) = set(p for p in (runs / "cms_dimuon").iterdir() if p.name.startswith("manual__")) - set(
        run_dirs
    )
    metrics = json.loads((rerun / "dimuon" / "_metrics.json").read_text())
    assert len(metrics["files"]) == 4 and metrics["changed_files"] == [str(changed)]
    assert str(changed) in (rerun / "report" / "report.html").read_text()
    listed = json.loads((cumulative / "partitions.json").read_text())["partitions"]
    expected = [("2026-03-01", str(rerun / "dimuon")), ("2026-03-02", str(run_dirs[1] / "dimuon"))]
    assert [(p["key"], p["run"]) for p in listed] == expected
    with (
        uproot.open(cumulative / "histograms.root") as a,
        uproot.open(tmp_path / "single/histograms.root") as b,
    ):
        assert np.array_equal(a["dimuon_mass"].values(), b["dimuon_mass"].values())  # replaced, not added


@pytest.mark.slow
def test_the_dag_still_runs_after_its_data_root_moves(sample, tmp_path):
    """Asset URIs name the data root, and Airflow keeps one active asset per name: after the root moves
    (another COLLIDERFLOW_DATA in the same metadata DB), `airflow dags test`, which runs no scheduler to
    retire the old asset, still runs the DAG (colliderflow.asset_activation)."""
    uris = []
    for root in ("first", "moved"):
        env = environment.airflow_env(home=str(tmp_path / "home"))
        env.update(COLLIDERFLOW_DATA=str(tmp_path / root), COLLIDERFLOW_STORAGE_ROOT="")
        env.update(COLLIDERFLOW_SPARK_MASTER="local[2]", COLLIDERFLOW_SPARK_DRIVER_MEMORY="1g")
        environment.prepare(env)
        conf = {"input": [f"{sample}/*.root"], "output_root": str(tmp_path / root / "runs")}
        proc = dags_test(env, "cms_dimuon", conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        uris.append([e for e in asset_events(env) if e[0] == "cms_dimuon_histograms"][-1][1])
    assert uris == [f"file://{tmp_path}/{root}/runs/cms_dimuon/*/dimuon" for root in ("first", "moved")]


@pytest.mark.parametrize(
    "bad",
    [
        {"schema": "miniaod"},
        {"chunk_entries": 10},
        {"spark_master": "mesos://x"},
        {"partition_by": "month"},
        {"take": "some"},
    ],
)
def test_invalid_conf_rejected_before_any_task(airflow_env, tmp_path, bad):
    assert_conf_rejected(airflow_env, "cms_dimuon", tmp_path, bad)
