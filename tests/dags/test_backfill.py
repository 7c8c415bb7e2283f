"""Real backfills through `make airflow`'s launcher (`airflow standalone`: api-server, scheduler with the
LocalExecutor, dag-processor, triggerer): three days of each DAG with `subsets=3` give three runs per DAG,
each on its own third of the input files, each in its own run directory; then SIGINT stops everything."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from jobs.dltrigger_schema import SAMPLES
from tests.conftest import ROOT
from tests.dags.conftest import airflow, backfill_run_states, free_port, http_ok, stop_standalone, wait_for

DAYS = (1, 2, 3)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, str]:
    from jobs.generate import delphes, nanoaod

    base = tmp_path_factory.mktemp("backfill-samples")
    nanoaod.generate(events=60_000, output=str(base / "nanoaod"), files=6, seed=11)
    delphes.generate(events=3_000, output=str(base / "delphes"), files=3, seed=12)
    return {"nanoaod": str(base / "nanoaod"), "delphes": str(base / "delphes")}


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
    """The log of each task's last attempt in the backfill runs (the runs all succeeded, so these are
    successful tasks' logs; an earlier, retried attempt may rightly hold an error)."""
    last: dict[str, pathlib.Path] = {}
    for path in logs.glob("dag_id=*/run_id=backfill__*/task_id=*/attempt=*.log"):
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


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the runs may take up to wait_for's 1500 s on a loaded machine
def test_backfills_three_days_disjoint_subsets_and_clean_stop(airflow_env, samples, tmp_path):
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
    # unpausing creates a scheduled run of each DAG with the default Params: it must not land in the
    # user's out/ (COLLIDERFLOW_DATA points into the session's scratch directory, tests/conftest.py)
    user_runs = lambda: sorted(str(p) for p in (ROOT / "out" / "demo" / "runs").glob("*/*"))  # noqa: E731
    before = user_runs()

    # a run is done when its last task is: dl_trigger's quality gate runs after the report is written
    def finished(dag_id: str) -> bool:
        states = backfill_run_states(env, dag_id)
        assert "failed" not in states, f"a backfill run of {dag_id} failed: {states}"
        return states == ["success"] * 3

    try:
        health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
        wait_for(lambda: http_ok(health), 420, "the api-server", proc)
        cli_env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}
        assert airflow(cli_env, "dags", "reserialize").returncode == 0
        for dag_id in ("cms_dimuon", "dl_trigger"):
            assert airflow(cli_env, "dags", "unpause", dag_id).returncode == 0
        backfill(
            cli_env, "cms_dimuon", 2, {"input": [samples["nanoaod"]], "output_root": str(runs), "subsets": 3}
        )
        inputs = {f"input_{c}": [f"{samples['delphes']}/{SAMPLES[c]}"] for c in SAMPLES}
        backfill(
            cli_env, "dl_trigger", 3,
            {**inputs, "output_root": str(runs), "subsets": 3,
             "epochs": 1, "batch_size": 32, "min_auc": 0},
        )  # fmt: skip
        wait_for(lambda: finished("cms_dimuon") and finished("dl_trigger"), 1500, "six backfill runs", proc)
    finally:
        try:
            assert stop_standalone(proc), "airflow standalone did not stop on SIGINT"
        finally:
            log.close()
    time.sleep(2)
    assert processes_with_env(f"AIRFLOW_HOME={home}") == [], "processes left after SIGINT"
    assert user_runs() == before, "a run of this test wrote into the user's out/demo/runs"

    def run_dirs(dag_id: str, hour: int) -> list[str]:
        names = sorted(p.name for p in (runs / dag_id).iterdir() if p.name.startswith("backfill__"))
        assert names == [f"backfill__2026-03-0{d}T{hour:02d}-00-00-00-00" for d in DAYS]
        return [str(runs / dag_id / n) for n in names]

    dimuon_files = [
        set(json.loads(open(f"{d}/dimuon/_metrics.json").read())["files"]) for d in run_dirs("cms_dimuon", 2)
    ]
    assert all(len(f) == 2 for f in dimuon_files)
    assert len(set.union(*dimuon_files)) == 6, "the di-muon runs' subsets overlap"

    trigger_files = []
    for d in run_dirs("dl_trigger", 3):
        table = ds.dataset(f"{d}/features", format="parquet", exclude_invalid_files=True).to_table(
            columns=["source_file"]
        )
        trigger_files.append(set(table.column("source_file").unique().to_pylist()))
        assert os.path.exists(f"{d}/model/model.keras") and os.path.exists(f"{d}/evaluation/_metrics.json")
    assert all(len(f) == 3 for f in trigger_files)  # one file of each class per run
    assert len(set.union(*trigger_files)) == 9, "the dl_trigger runs' subsets overlap"
    logs = final_attempt_logs(home / "logs")
    assert len(logs) >= 6 * 4, sorted(logs)  # every task of the six runs (cms_dimuon has 4, dl_trigger 10)
    noisy = {task: lines for task, path in logs.items() if (lines := error_lines(path))}
    assert not noisy, noisy  # a successful task's log holds no ERROR line
