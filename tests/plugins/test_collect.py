"""collect_metrics through a real Airflow run: `airflow dags test cms_dimuon` (SQLite metadata DB in a
temp AIRFLOW_HOME, local backend, real Spark) ends with stage_times >> collect_metrics, whose report
holds the Airflow task durations, their try numbers and the Spark task metrics of the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from colliderflow.environment import airflow, airflow_env, prepare
from tests.conftest import ROOT


def kill_first_job(module: str, stop: threading.Event) -> list[int]:
    """Kill the process group of the first `python -m jobs.<module>` that starts (what an OOM kill or a
    lost node does to a task); returns the killed pids."""
    killed: list[int] = []

    def watch() -> None:
        while not stop.is_set() and not killed:
            for proc in Path("/proc").iterdir():
                try:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if proc.name.isdigit() and argv[1:3] == [b"-m", f"jobs.{module}".encode()]:
                    os.killpg(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                    return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return killed


@pytest.mark.slow
def test_cms_dimuon_run_ends_with_a_metrics_report(tmp_path):
    """The dimuon task's first try is killed mid-run: Airflow retries it, and the report says which
    try produced each task's result."""
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
        "input": [f"{sample}/*.root"],
        "output_root": str(tmp_path / "runs"),
        "spark_master": "local[1]",
        "chunk_entries": 5000,
        "take": "all",
    }
    stop = threading.Event()
    killed = kill_first_job("dimuon", stop)
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
    stop.set()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert killed, "the dimuon job never started"
    (run_dir,) = [p for p in (tmp_path / "runs" / "cms_dimuon").iterdir() if p.name.startswith("manual__")]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["dag_id"] == "cms_dimuon" and run_dir.name.startswith(summary["run_id"][:6])
    dimuon = summary["stage_times"]["dimuon"]
    assert dimuon["state"] == "success" and dimuon["operator"] == "LocalStageOperator"
    assert dimuon["try_number"] == 2  # the killed first try was retried
    assert {t["try_number"] for name, t in summary["stage_times"].items() if name != "dimuon"} == {1}
    page = (run_dir / "report" / "report.html").read_text()
    assert "<tr><td>dimuon</td><td>success</td><td>2</td>" in page
    job_wall = summary["stages"]["dimuon"]["wall_seconds"]
    assert dimuon["duration_seconds"] >= job_wall > 0  # the task wraps the job (interpreter + JVM start)
    assert summary["stages"]["dimuon"]["events"] == 20000
    (app,) = summary["spark"]["applications"]
    assert app["stage"] == "dimuon" and app["totals"]["tasks"] >= 4 and app["totals"]["failed_tasks"] == 0
    assert (run_dir / "report" / "report.html").stat().st_size > 10_000
