"""A real embedded Airflow for DAG tests: its own AIRFLOW_HOME with a migrated SQLite metadata DB, the
project's dags/ and plugins/, exactly as `make demo` and `make airflow` configure it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "plugins"))

from colliderflow import environment  # noqa: E402


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    env = environment.airflow_env(home=str(tmp_path_factory.mktemp("airflow-home")))
    env["COLLIDERFLOW_SPARK_MASTER"] = "local[2]"
    env["COLLIDERFLOW_SPARK_DRIVER_MEMORY"] = "1g"
    environment.prepare(env)
    return env


# The dl_trigger end-to-end conf: the form's defaults on a demo sample. 10,000 events per class leave ~570
# per class after the isolated-lepton cut (QCD's ~6 % pass rate sets the balanced size), ~1,200 training
# events, on which the defaults (batch and learning rate `auto`) must learn.
DL_TRIGGER_E2E_CONF = {"demo_events": 10_000}


@pytest.fixture(scope="session")
def dl_trigger_local_run(airflow_env, tmp_path_factory):
    """One local end-to-end dl_trigger run (Spark local[2]); its run directory, for the local test and
    as the reference the cluster run is compared with."""
    runs = tmp_path_factory.mktemp("dl-trigger-local") / "runs"
    proc = dags_test(
        airflow_env, "dl_trigger", {**DL_TRIGGER_E2E_CONF, "output_root": str(runs)}, timeout=1500
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    (run,) = [p for p in (runs / "dl_trigger").iterdir() if p.name not in ("partitions", "cumulative")]
    return run


def airflow(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return environment.airflow(env, *args, check=False, capture_output=True, text=True, timeout=timeout)


def dags_test(
    env: dict[str, str], dag_id: str, conf: dict, timeout: int = 900
) -> subprocess.CompletedProcess:
    return airflow(env, "dags", "test", dag_id, "-c", json.dumps(conf), timeout=timeout)


def assert_conf_rejected(env: dict[str, str], dag_id: str, tmp_path, bad: dict) -> None:
    """A conf violating one Param fails the run before any task: the error names the Param and no
    run directory is created."""
    runs = tmp_path / "runs"
    proc = dags_test(env, dag_id, {"output_root": str(runs), **bad}, timeout=300)
    assert proc.returncode != 0
    (key,) = bad
    assert f"Invalid input for param {key}" in proc.stdout + proc.stderr
    assert not runs.exists(), "a task ran despite the invalid conf"


def metadata_rows(env: dict[str, str], query: str, **params) -> list[tuple]:
    """The rows of one query on the environment's metadata DB."""
    import sqlalchemy as sa

    from colliderflow.progress import metadata_engine

    engine = metadata_engine(env)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(sa.text(query), params).all()]
    finally:
        engine.dispose()


def asset_events(env: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(asset name, asset URI, event extra) of every asset event in the metadata DB, oldest first."""
    query = "SELECT a.name, a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
    rows = metadata_rows(env, query)
    return [(name, uri, json.loads(extra) if isinstance(extra, str) else extra) for name, uri, extra in rows]


def backfill_run_states(env: dict[str, str], dag_id: str) -> list[str]:
    """The states of `dag_id`'s backfill runs in the metadata DB, by run id."""
    query = "SELECT state FROM dag_run WHERE dag_id = :d AND run_id LIKE 'backfill%' ORDER BY run_id"
    return [state for (state,) in metadata_rows(env, query, d=dag_id)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def stop_standalone(proc: subprocess.Popen, timeout: float = 180) -> bool:
    """What Ctrl-C does to `make airflow`: SIGINT to the launcher's group; SIGKILL if it is still
    running after `timeout`. True when SIGINT alone stopped it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return False


def import_errors(env: dict[str, str]) -> dict[str, str]:
    """Parse dags/ with a real DagBag in a fresh interpreter (AIRFLOW_HOME must be set before import)."""
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"b = DagBag(dag_folder={str(ROOT / 'dags')!r}); "
        "print(json.dumps({'errors': b.import_errors, 'dags': sorted(b.dag_ids)}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


__all__ = [
    "DL_TRIGGER_E2E_CONF", "airflow", "assert_conf_rejected", "dags_test", "free_port", "http_ok",
    "import_errors", "os", "wait_for",
]  # fmt: skip
