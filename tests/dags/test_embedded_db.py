"""The embedded SQLite metadata DB under contention: standalone's components and a CLI call (`airflow
backfill create` while the scheduler runs) share one writer lock. sqlite3's default 5 s busy wait was
too short on a loaded machine, and a transaction that reads before it writes (the backfill's savepoint)
got "database is locked" at once whatever the wait (colliderflow.sqlite_db)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from colliderflow import environment
from tests.conftest import ROOT
from tests.dags.conftest import airflow

HOLD_S = 20.0  # well past sqlite3's default 5 s busy wait, even counting the CLI's start-up


def test_cli_write_waits_for_a_writer_holding_the_lock(airflow_env):
    db = sqlite3.connect(
        f"{airflow_env['AIRFLOW_HOME']}/airflow.db", isolation_level=None, timeout=30, check_same_thread=False
    )
    db.execute("BEGIN IMMEDIATE")  # take the single writer lock, as a busy scheduler loop does
    released = threading.Event()

    def release_later() -> None:
        time.sleep(HOLD_S)
        db.execute("ROLLBACK")
        released.set()

    holder = threading.Thread(target=release_later)
    start = time.monotonic()
    holder.start()
    try:
        result = airflow(airflow_env, "pools", "set", "contention_probe", "1", "written under contention")
    finally:
        holder.join()
        db.close()
    assert result.returncode == 0, result.stderr[-2000:]
    assert released.is_set() and time.monotonic() - start >= HOLD_S
    listed = airflow(airflow_env, "pools", "get", "contention_probe")
    assert listed.returncode == 0 and "contention_probe" in listed.stdout
    assert airflow(airflow_env, "pools", "delete", "contention_probe").returncode == 0


# Runs `airflow backfill create` in one interpreter whose every SAVEPOINT first lets another writer take
# the lock (as the scheduler does at any moment): the CI failure, made certain instead of rare.
BACKFILL_UNDER_CONTENTION = textwrap.dedent(
    """
    import json, os, sys
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from tests.sqlite_lock import WriterLockHolder

    holders = []

    def contend(conn, name):
        if not holders:
            holders.append(WriterLockHolder(os.environ["AIRFLOW_HOME"] + "/airflow.db"))
            holders[0].start_and_wait()

    event.listen(Engine, "savepoint", contend)
    from airflow.__main__ import main

    sys.argv = ["airflow", *sys.argv[1:]]
    try:
        main()
    finally:
        for h in holders:
            h.join()
        print("HOLDER", json.dumps({"took": bool(holders and holders[0].took)}))
    """
)


@pytest.fixture
def own_airflow(tmp_path) -> dict[str, str]:
    env = environment.airflow_env(home=str(tmp_path / "home"))
    environment.prepare(env)
    assert airflow(env, "dags", "reserialize").returncode == 0
    return env


@pytest.mark.parametrize("fixed", [True, False], ids=["immediate", "plain-pysqlite"])
def test_backfill_create_survives_a_writer_at_its_savepoint(own_airflow, fixed):
    env = dict(own_airflow)
    if not fixed:  # the hazard is real: without the local settings the same call fails
        settings_dir = str(environment.SQLITE_LOCAL_SETTINGS)
        kept = [p for p in env["PYTHONPATH"].split(os.pathsep) if p != settings_dir]
        env["PYTHONPATH"] = os.pathsep.join(kept)
    args = ["backfill", "create", "--dag-id", "cms_dimuon", "--from-date", "2026-01-01",
            "--to-date", "2026-01-03T02:00:00+00:00", "--dag-run-conf", '{"take": "all"}']  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", BACKFILL_UNDER_CONTENTION, *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    holder = json.loads(proc.stdout.split("HOLDER ", 1)[1].splitlines()[0])
    assert holder["took"], "the second writer never held the lock: nothing was tested"
    if not fixed:
        assert proc.returncode != 0 and "database is locked" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = airflow(env, "dags", "list-runs", "cms_dimuon", "--output", "json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    runs = json.loads(listed.stdout.strip().splitlines()[-1])  # after any warnings Airflow prints
    assert sorted(r["run_id"] for r in runs) == [f"backfill__2026-01-0{d}T02:00:00+00:00" for d in (1, 2, 3)]


def python_path(home) -> list[str]:
    return environment.airflow_env(home=str(home))["PYTHONPATH"].split(os.pathsep)


def test_local_settings_only_for_sqlite(tmp_path, monkeypatch):
    settings_dir = str(environment.SQLITE_LOCAL_SETTINGS)
    assert settings_dir in python_path(tmp_path / "a")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://u:p@db/airflow")
    assert settings_dir not in python_path(tmp_path / "b")
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    (tmp_path / "c" / "config").mkdir(parents=True)
    (tmp_path / "c" / "config" / "airflow_local_settings.py").write_text("# the user's own\n")
    assert settings_dir not in python_path(tmp_path / "c")
