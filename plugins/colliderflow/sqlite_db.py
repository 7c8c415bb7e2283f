"""SQLite as the embedded default's Airflow metadata DB, safe for several processes at once.

SQLite has one writer lock. A transaction that first reads and then writes must upgrade its read lock;
when another process holds the writer lock at that moment, SQLite answers "database is locked" at once,
without the busy wait, because waiting could deadlock. pysqlite opens transactions as deferred (a read
lock first), and a SAVEPOINT outside a transaction (SQLAlchemy's `begin_nested`, used by Airflow's
backfill and asset code) starts one too, so `airflow backfill create` beside a running scheduler failed.
The fix is the one Django (`transaction_mode`) and Rails use for SQLite: write transactions begin
IMMEDIATE, taking the writer lock up front, where the busy wait applies. Airflow picks these engine
factories up through `airflow_local_settings` (see embedded_local_settings/)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# A generous busy wait (sqlite3's 5 s default is too short on a loaded 2-core laptop), and pysqlite's
# implicit BEGIN before INSERT/UPDATE/DELETE made IMMEDIATE. Explicit settings in Airflow's
# `[database] sql_alchemy_connect_args` win.
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 120.0, "isolation_level": "IMMEDIATE"}


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _begin_immediate_before_savepoint(conn: Connection, name: str | None) -> None:
    """A SAVEPOINT outside a transaction would start a deferred one: open an IMMEDIATE one first."""
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is not None and not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


def create_metadata_engine(
    sql_alchemy_conn: str, *, engine_args: dict[str, Any], connect_args: dict[str, Any]
) -> Engine:
    """Airflow's default engine factory, plus immediate write transactions when the DB is SQLite."""
    if not _is_sqlite(sql_alchemy_conn):
        return create_engine(sql_alchemy_conn, connect_args=connect_args, **engine_args, future=True)
    engine = create_engine(
        sql_alchemy_conn, connect_args={**SQLITE_CONNECT_ARGS, **connect_args}, **engine_args, future=True
    )
    event.listen(engine, "savepoint", _begin_immediate_before_savepoint)
    return engine


def create_async_metadata_engine(
    sql_alchemy_conn_async: str, *, connect_args: dict[str, Any], engine_args: dict[str, Any] | None = None
) -> AsyncEngine:
    """Airflow's default async engine factory, with the same SQLite connection settings."""
    if _is_sqlite(sql_alchemy_conn_async):
        connect_args = {**SQLITE_CONNECT_ARGS, **connect_args}
    return create_async_engine(
        sql_alchemy_conn_async, connect_args=connect_args, **(engine_args or {}), future=True
    )
