"""A second SQLite writer for contention tests (in-process or inside an Airflow CLI process)."""

from __future__ import annotations

import sqlite3
import threading
import time

HOLD_S = 2.0


class WriterLockHolder(threading.Thread):
    """Another process's writer (a scheduler loop): takes the writer lock if it is free, keeps it HOLD_S."""

    def __init__(self, db: str) -> None:
        super().__init__()
        self.db, self.tried, self.took, self.still_holding = db, threading.Event(), False, False

    def run(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.took = True
        except sqlite3.OperationalError:
            return
        finally:
            self.tried.set()
        time.sleep(HOLD_S)
        conn.execute("ROLLBACK")
        conn.close()

    def start_and_wait(self) -> None:
        self.start()
        assert self.tried.wait(10)
