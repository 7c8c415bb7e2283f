"""collect_metrics through a real Airflow run: `airflow dags test cms_dimuon` (SQLite metadata DB in a
temp AIRFLOW_HOME, local backend, real Spark) ends with stage_times >> collect_metrics, whose report
holds the Airflow task durations and the Spark task metrics of the same run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from colliderflow.environment import airflow, airflow_env, prepare
from tests.conftest import ROOT


@pytest.mark.slow
def test_cms_dimuon_run_ends_with_a_metrics_report(tmp_path):
    sample = tmp_path / "sample"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.generate",
            "nanoaod",
            "--events",
            "20000",
            "--files",
            "2",
            "--output",
            str(sample),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    env = airflow_env(home=str(tmp_path / "airflow"))
    env.update({"COLLIDERFLOW_BACKEND": "local", "COLLIDERFLOW_SPARK_DRIVER_MEMORY": "1g"})
    env.pop("COLLIDERFLOW_PUSHGATEWAY", None)
    prepare(env)
    conf = {
        "input": f"{sample}/*.root",
        "output_root": str(tmp_path / "runs"),
        "spark_master": "local[1]",
        "chunk_entries": 5000,
        "subset": "all",
    }
    proc = airflow(
        env,
        "dags",
        "test",
        "cms_dimuon",
        "-c",
        json.dumps(conf),
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_dir,) = (tmp_path / "runs" / "cms_dimuon").iterdir()
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["dag_id"] == "cms_dimuon" and run_dir.name.startswith(summary["run_id"][:6])
    dimuon = summary["stage_times"]["dimuon"]
    assert dimuon["state"] == "success" and dimuon["operator"] == "LocalStageOperator"
    job_wall = summary["stages"]["dimuon"]["wall_seconds"]
    assert dimuon["duration_seconds"] >= job_wall > 0  # the task wraps the job (interpreter + JVM start)
    assert summary["stages"]["dimuon"]["events"] == 20000
    (app,) = summary["spark"]["applications"]
    assert app["stage"] == "dimuon" and app["totals"]["tasks"] >= 4 and app["totals"]["failed_tasks"] == 0
    assert (run_dir / "report" / "report.html").stat().st_size > 10_000
