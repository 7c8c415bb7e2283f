"""Real nights and a real backfill through `make airflow`'s launcher (`airflow standalone`: api-server,
scheduler with the LocalExecutor, dag-processor, triggerer): two nights of cms_dimuon on a folder that
grows record two partitions; a backfill over those nights, created after one more file arrived,
reprocesses exactly the files each night recorded (not a new listing); two runs then race for that
file and one claims it; then SIGINT stops everything."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.dags.conftest import airflow, free_port, http_ok, metadata_rows, stop_standalone, wait_for

DAYS = (1, 2)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, str]:
    from jobs.generate import nanoaod

    base = tmp_path_factory.mktemp("backfill-samples")
    nanoaod.generate(events=60_000, output=str(base / "nanoaod"), files=6, seed=11)
    return {"nanoaod": str(base / "nanoaod")}


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


def final_attempt_logs(logs: pathlib.Path) -> dict[str, pathlib.Path]:
    """The log of each task's last attempt in cms_dimuon's runs (they all succeeded, so these are
    successful tasks' logs; an earlier, retried attempt may rightly hold an error)."""
    last: dict[str, pathlib.Path] = {}
    for path in logs.glob("dag_id=cms_dimuon/run_id=*/task_id=*/attempt=*.log"):
        task = str(path.parent.relative_to(logs))
        if task not in last or int(path.stem.split("=")[1]) > int(last[task].stem.split("=")[1]):
            last[task] = path
    return last


def error_lines(path: pathlib.Path) -> list[str]:
    """Lines at ERROR level or above, tracebacks, and relayed C++ error lines (absl's E0000 prefix)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = {"event": line}
        event, level = str(record.get("event", "")), str(record.get("level", "")).lower()
        if level in ("error", "critical") or "Traceback" in event or event.startswith("E0000"):
            found.append(f"{level}: {event[:300]}")
    return found


def backfill(env: dict[str, str], dag_id: str, hour: int, conf: dict) -> None:
    created = airflow(
        env, "backfill", "create", "--dag-id", dag_id, "--from-date", f"2026-03-0{DAYS[0]}",
        "--to-date", f"2026-03-0{DAYS[-1]}T{hour:02d}:00:00+00:00", "--dag-run-conf", json.dumps(conf),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr[-3000:]


def run_states(env: dict[str, str], dag_id: str, prefix: str) -> list[str]:
    query = "SELECT state FROM dag_run WHERE dag_id = :d AND run_id LIKE :p ORDER BY run_id"
    return [state for (state,) in metadata_rows(env, query, d=dag_id, p=f"{prefix}%")]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_nights_then_a_backfill_reprocess_recorded_partitions_and_clean_stop(airflow_env, samples, tmp_path):
    env = dict(airflow_env)
    port = free_port()
    home = tmp_path / "home"
    env["AIRFLOW_HOME"] = str(home)
    log = open(tmp_path / "standalone.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "colliderflow.standalone", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    runs, inp = tmp_path / "runs", tmp_path / "in"
    inp.mkdir()
    files = sorted(pathlib.Path(samples["nanoaod"]).glob("*.root"))
    conf = {"input": [str(inp)], "output_root": str(runs)}
    # unpausing creates a scheduled run of each DAG with the default Params: it must not land in the
    # user's out/ (COLLIDERFLOW_DATA points into the session's scratch directory, tests/conftest.py)
    user_runs = lambda: sorted(str(p) for p in (ROOT / "out" / "demo" / "runs").glob("*/*"))  # noqa: E731

    def done(prefix: str, count: int) -> bool:
        states = run_states(env, "cms_dimuon", prefix)
        assert "failed" not in states, f"a {prefix} run failed: {states}"
        return states == ["success"] * count

    before = user_runs()
    try:
        health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
        wait_for(lambda: http_ok(health), 420, "the api-server", proc)
        cli_env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}
        assert airflow(cli_env, "dags", "reserialize").returncode == 0
        for dag_id in ("cms_dimuon", "dl_trigger"):
            assert airflow(cli_env, "dags", "unpause", dag_id).returncode == 0
        for n, (day, batch) in enumerate(((1, files[:4]), (2, files[4:5]))):
            for f in batch:
                shutil.copy(f, inp / f.name)
            when = f"2026-03-0{day}T12:00:00+00:00"
            triggered = airflow(cli_env, "dags", "trigger", "cms_dimuon", "-l", when, "-c", json.dumps(conf))
            assert triggered.returncode == 0, triggered.stderr[-3000:]
            wait_for(lambda n=n: done("manual__", n + 1), 600, f"night {day}", proc)
        shutil.copy(files[5], inp / files[5].name)  # arrives after the nights: no backfill reads it
        backfill(cli_env, "cms_dimuon", 2, conf)
        wait_for(lambda: done("backfill__", 2), 900, "two backfill runs", proc)
        for day in (3, 4):  # two runs racing for the file that arrived: one claims it, the other nothing
            when = f"2026-03-0{day}T12:00:00+00:00"
            triggered = airflow(cli_env, "dags", "trigger", "cms_dimuon", "-l", when, "-c", json.dumps(conf))
            assert triggered.returncode == 0, triggered.stderr[-3000:]
        wait_for(lambda: done("manual__", 4), 600, "the two racing runs", proc)
    finally:
        try:
            assert stop_standalone(proc), "airflow standalone did not stop on SIGINT"
        finally:
            log.close()
    time.sleep(2)
    assert processes_with_env(f"AIRFLOW_HOME={home}") == [], "processes left after SIGINT"
    assert user_runs() == before, "a run of this test wrote into the user's out/demo/runs"

    def files_read(prefix: str) -> list[set[str]]:
        dirs = sorted(p for p in (runs / "cms_dimuon").iterdir() if p.name.startswith(prefix))
        return [set(json.loads((d / "dimuon" / "_metrics.json").read_text())["files"]) for d in dirs]

    nights, backfills = files_read("manual__"), files_read("backfill__")
    assert [len(f) for f in nights] == [4, 1, 1], nights  # the racing run that found nothing ran no stage
    assert len(set.union(*nights)) == 6, "a file was read by two nights"
    assert backfills == nights[:2], "a backfill night read other files than its partition recorded"
    cumulative = json.loads((runs / "cms_dimuon" / "cumulative" / "partitions.json").read_text())
    listed = [(p["key"], p["files"]) for p in cumulative["partitions"]]
    assert listed[:2] == [("2026-03-01", 4), ("2026-03-02", 1)] and len(listed) == 3, listed
    assert listed[2] in (("2026-03-03", 1), ("2026-03-04", 1))  # whichever racing run claimed it first
    assert all("backfill__" in p["run"] for p in cumulative["partitions"][:2])  # the reruns replaced them
    logs = final_attempt_logs(home / "logs")
    assert len(logs) >= 6 * 3, sorted(logs)  # every task that ran in the six runs
    noisy = {task: lines for task, path in logs.items() if (lines := error_lines(path))}
    assert not noisy, noisy  # a successful task's log holds no ERROR line
