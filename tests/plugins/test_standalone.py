"""`make airflow`'s launcher (colliderflow.standalone) when Airflow cannot start: a port another program
holds, Airflow's own log-server port, a database that cannot be opened. Each ends within seconds,
non-zero, with one line naming the cause, and leaves no process behind. (Its normal start and Ctrl-C:
tests/ui/test_trigger_form.py and tests/dags/test_backfill.py start Airflow through it.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT


def launch(tmp_path, port: int, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), **env}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "colliderflow.standalone", "--port", str(port)], cwd=ROOT, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left
        os.killpg(proc.pid, 0)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), elapsed


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 500, done.stderr[-2000:]
    return lines[0]


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done, elapsed = launch(tmp_path, port)
    assert done.returncode == 1 and elapsed < 30
    assert (
        one_line(done) == f"[airflow] not started: port {port} is in use (Address already in use): "
        "free it or choose --port"
    )
    assert not (tmp_path / "home").exists(), "something started before the port was checked"


def test_airflows_own_log_server_port_is_refused(tmp_path):
    done, elapsed = launch(tmp_path, 8793)
    assert done.returncode == 1 and elapsed < 30
    assert "port 8793 is Airflow's own worker log server port" in one_line(done)


def test_a_database_that_cannot_be_opened_stops_the_start_in_one_line(tmp_path):
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    conn = f"sqlite:///{tmp_path}/no/such/dir/airflow.db"
    done, elapsed = launch(tmp_path, free, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=conn)
    assert done.returncode == 1 and elapsed < 60
    line = one_line(done)
    assert "`airflow db migrate` failed" in line and "unable to open database file" in line, line
