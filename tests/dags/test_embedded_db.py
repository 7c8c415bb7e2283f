"""The embedded SQLite metadata DB under contention: standalone's components and a CLI call (`airflow
backfill create` while the scheduler runs) share one writer lock, and sqlite3's default 5 s busy wait
made such a CLI call fail with "database is locked" on a loaded machine."""

from __future__ import annotations

import sqlite3
import threading
import time

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
