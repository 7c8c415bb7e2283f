"""The cms_dimuon DAG against a real Airflow: import, an end-to-end `airflow dags test` on a small
generated sample, Params rejecting a bad conf before any task runs. (Its real backfill through
`airflow standalone` is in test_backfill.py.)"""

from __future__ import annotations

import json

import pytest

from tests.dags.conftest import assert_conf_rejected, asset_events, dags_test, environment, import_errors


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


@pytest.mark.slow
def test_dags_test_end_to_end(airflow_env, sample, tmp_path):
    runs = tmp_path / "runs"
    proc = dags_test(airflow_env, "cms_dimuon", {"input": [f"{sample}/*.root"], "output_root": str(runs)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (run,) = list((runs / "cms_dimuon").iterdir())
    out = run / "dimuon"
    assert {"_SUCCESS", "histograms.root", "cutflow.json", "_metrics.json", "dimuon_mass.png"} <= {
        p.name for p in out.iterdir()
    }
    cuts = json.loads((out / "cutflow.json").read_text())["cuts"]
    assert cuts[0] == {
        "cut": "events",
        "events": 60_000,
        "fraction_of_previous": 1.0,
        "fraction_of_total": 1.0,
    }
    assert any((run / "spark-events").iterdir()), "the Spark stage wrote no event log"
    metrics = json.loads((out / "_metrics.json").read_text())
    (event,) = [e for e in asset_events(airflow_env) if e[2].get("url") == str(out)]
    name, uri, extra = event
    assert (
        name == "cms_dimuon_histograms"
        and uri.startswith("file:///")
        and uri.endswith("/cms_dimuon/*/dimuon")
    )
    assert extra["events"] == 60_000 and extra["pairs"] == metrics["pairs"] > 0


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
        uris.append(asset_events(env)[-1][1])
    assert uris == [f"file://{tmp_path}/{root}/runs/cms_dimuon/*/dimuon" for root in ("first", "moved")]


@pytest.mark.parametrize(
    "bad",
    [{"schema": "miniaod"}, {"chunk_entries": 10}, {"spark_master": "mesos://x"}, {"partition_by": "month"}, {"take": "some"}],
)
def test_invalid_conf_rejected_before_any_task(airflow_env, tmp_path, bad):
    assert_conf_rejected(airflow_env, "cms_dimuon", tmp_path, bad)
