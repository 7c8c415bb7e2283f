"""SQLite's read-to-write upgrade: a transaction that reads first and then writes gets "database is
locked" at once, without the busy wait, when another connection holds the writer lock. The engine
factory of the embedded default begins write transactions (and SAVEPOINTs) IMMEDIATE instead."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from colliderflow.sqlite_db import create_metadata_engine
from tests.sqlite_lock import HOLD_S, WriterLockHolder


def read_then_write_in_savepoint(engine, holder: WriterLockHolder) -> None:
    """Airflow's backfill pattern: begin_nested, read the latest run, insert a run; another writer
    tries to take the lock between the savepoint and the insert."""
    with engine.connect() as conn:
        try:
            with conn.begin_nested():
                holder.start_and_wait()
                conn.execute(text("SELECT count(*) FROM run")).scalar()
                conn.execute(text("INSERT INTO run (name) VALUES ('backfill')"))
            conn.commit()
        except OperationalError:
            holder.still_holding = holder.is_alive()
            raise
        finally:
            holder.join()


@pytest.fixture
def db(tmp_path) -> str:
    path = str(tmp_path / "airflow.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE run (name TEXT)")
    return path


def test_plain_pysqlite_fails_at_once_despite_a_long_busy_wait(db):
    """The hazard is real: a 120 s busy wait does not help a read lock that must be upgraded."""
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 120.0})
    holder = WriterLockHolder(db)
    with pytest.raises(OperationalError, match="database is locked"):
        read_then_write_in_savepoint(engine, holder)
    assert holder.still_holding  # failed while the holder still held the lock: no busy wait


def test_savepoint_waits_for_the_writer_and_then_writes(db):
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={})
    holder = WriterLockHolder(db)
    read_then_write_in_savepoint(engine, holder)
    assert not holder.took, "the savepoint's transaction left the writer lock free between read and write"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM run").fetchall() == [("backfill",)]


def test_write_transaction_waits_for_a_writer_holding_the_lock(db):
    """The holder goes first; the IMMEDIATE begin waits for it instead of failing."""
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={})
    holder = WriterLockHolder(db)
    holder.start_and_wait()
    assert holder.took
    start = time.monotonic()
    with engine.connect() as conn:
        with conn.begin_nested():
            conn.execute(text("SELECT count(*) FROM run")).scalar()
            conn.execute(text("INSERT INTO run (name) VALUES ('after the holder')"))
        conn.commit()
    waited = time.monotonic() - start
    holder.join()
    assert waited >= HOLD_S * 0.8
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM run").fetchall() == [("after the holder",)]


def test_user_connect_args_win(db):
    engine = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={"timeout": 7.0})
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        assert conn.connection.dbapi_connection.isolation_level == "IMMEDIATE"
    default = create_metadata_engine(f"sqlite:///{db}", engine_args={}, connect_args={})
    with default.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 120000
