"""The cms_dimuon DAG against a real Airflow: import, an end-to-end `airflow dags test` on a small
generated sample, Params rejecting a bad conf before any task runs, and a real backfill over three
days through `airflow standalone` (scheduler + LocalExecutor) giving three disjoint subsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.dags.conftest import airflow, dags_test, free_port, import_errors


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> str:
    from jobs.generators import nanoaod

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
    proc = dags_test(airflow_env, "cms_dimuon", {"input": f"{sample}/*.root", "output_root": str(runs)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (run,) = list((runs / "cms_dimuon").iterdir())
    out = run / "dimuon"
    assert {"_SUCCESS", "histograms.root", "cutflow.json", "metrics.json", "dimuon_mass.png"} <= {
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


@pytest.mark.parametrize(
    "bad",
    [{"schema": "miniaod"}, {"chunk_entries": 10}, {"spark_master": "mesos://x"}, {"subset": "3 of 4"}],
)
def test_invalid_conf_rejected_before_any_task(airflow_env, tmp_path, bad):
    runs = tmp_path / "runs"
    proc = dags_test(airflow_env, "cms_dimuon", {"output_root": str(runs), **bad}, timeout=300)
    assert proc.returncode != 0
    (key,) = bad
    assert f"Invalid input for param {key}" in proc.stdout + proc.stderr
    assert not runs.exists(), "a task ran despite the invalid conf"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited with {proc.returncode} while waiting for {what}")
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_backfill_three_days_disjoint_subsets_and_clean_stop(airflow_env, sample, tmp_path):
    """`make airflow`'s launcher, a real scheduler: backfill 3 days with subsets=3 -> 3 runs, each on its own
    third of the files, each in its own run directory; then SIGINT stops every process."""
    env = dict(airflow_env)
    port = free_port()
    home = tmp_path / "home"
    env["AIRFLOW_HOME"] = str(home)
    log = open(tmp_path / "standalone.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "colliderflow.standalone", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    runs = tmp_path / "runs"
    try:
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{port}/api/v2/monitor/health"), 420, "the api-server", proc
        )
        cli_env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}
        assert airflow(cli_env, "dags", "reserialize").returncode == 0
        assert airflow(cli_env, "dags", "unpause", "cms_dimuon").returncode == 0
        conf = {"input": sample, "output_root": str(runs), "subsets": 3}
        created = airflow(
            cli_env, "backfill", "create", "--dag-id", "cms_dimuon", "--from-date", "2026-03-01",
            "--to-date", "2026-03-03T02:00:00+00:00", "--dag-run-conf", json.dumps(conf),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr[-3000:]
        done = lambda: len(list(runs.glob("cms_dimuon/*/dimuon/_SUCCESS"))) == 3  # noqa: E731
        wait_for(done, 900, "three backfill runs", proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT) if proc.poll() is None else None
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("airflow standalone did not stop on SIGINT") from None
        log.close()
    run_dirs = sorted(p.name for p in (runs / "cms_dimuon").iterdir())
    assert run_dirs == [f"backfill__2026-03-0{d}T02-00-00-00-00" for d in (1, 2, 3)]
    files = [
        set(json.loads((runs / "cms_dimuon" / d / "dimuon" / "metrics.json").read_text())["files"])
        for d in run_dirs
    ]
    assert all(len(f) == 2 for f in files)
    assert len(set.union(*files)) == 6, "the three runs' subsets overlap"
    assert rc is not None
    time.sleep(2)
    leftover = processes_with_env(f"AIRFLOW_HOME={home}")
    assert leftover == [], f"processes left after SIGINT: {leftover}"


def processes_with_env(entry: str) -> list[str]:
    """Command lines of live processes whose environment holds `entry` (this test's AIRFLOW_HOME)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entry.encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found
