"""`make airflow`: `airflow standalone` (api-server, scheduler, dag-processor, triggerer) with the
project's DAGs and plugins, example DAGs off and a known admin login. It refuses a port in use before
starting anything, prints the UI's address only once the api-server answers and every component reports
healthy, and stops everything with one line when one does not come up. Ctrl-C stops it cleanly: the
signal is forwarded as SIGINT, which `airflow standalone` handles (SIGTERM would leave orphans)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from colliderflow import environment

# how long each shutdown signal waits for the components (a test sets less: COLLIDERFLOW_SHUTDOWN_GRACE_S)
SHUTDOWN_GRACE_S = float(os.environ.get("COLLIDERFLOW_SHUTDOWN_GRACE_S", "20"))


# Airflow's own ports on this host: the worker and triggerer log servers (api-server must not take them)
LOG_SERVER_PORTS = {"worker log server": ("WORKER_LOG_SERVER_PORT", 8793),
                    "triggerer log server": ("TRIGGER_LOG_SERVER_PORT", 8794)}  # fmt: skip
# every component `airflow standalone` starts, as /api/v2/monitor/health names it
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
START_TIMEOUT_S = 360.0


class StartFailed(Exception):
    """Airflow could not start: one line naming the cause."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m colliderflow.standalone", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW__API__PORT", "8080")))
    args = parser.parse_args(argv)
    try:
        check_port(args.port)
        env = environment.airflow_env()
        env["AIRFLOW__API__PORT"] = str(args.port)
        env.setdefault("AIRFLOW__API__BASE_URL", f"http://localhost:{args.port}")
        env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{args.port}/execution/")
        environment.prepare(env)
    except (StartFailed, environment.PrepareFailed) as exc:
        print(f"[airflow] not started: {exc}", file=sys.stderr, flush=True)
        return 1
    return run(env, args.port)


def check_port(port: int) -> None:
    """Refuse, before anything starts, a port that another program holds or that Airflow's own log
    servers use (the api-server would die on "address already in use" while the rest ran on)."""
    for name, (option, default) in LOG_SERVER_PORTS.items():
        if port == int(os.environ.get(f"AIRFLOW__LOGGING__{option}", default)):
            raise StartFailed(f"port {port} is Airflow's own {name} port: choose another --port")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no owner
        try:
            probe.bind(("0.0.0.0", port))  # where the api-server listens
        except OSError as exc:
            raise StartFailed(f"port {port} is in use ({exc.strerror}): free it or choose --port") from None


def run(env: dict[str, str], port: int) -> int:
    """`airflow standalone` in its own session until Ctrl-C/SIGTERM; stopped with one line when a
    component does not come up."""
    password = environment.admin_password(env)
    print(f"[airflow] starting on port {port}; AIRFLOW_HOME={env['AIRFLOW_HOME']}", flush=True)
    # own session: a terminal's Ctrl-C reaches only us, and shutdown() signals the whole group. SIGINT
    # back to its default in the child, since a shell starting us in the background leaves it ignored.
    proc = subprocess.Popen(
        [environment.airflow_exe(), "standalone"],
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/api/v2/monitor/health", stop)
    except StartFailed as exc:
        shutdown(proc)
        print(f"[airflow] stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    if not stop.is_set():
        print(f"[airflow] UI: http://localhost:{port}  login: {environment.ADMIN_USER} / {password}; "
              "stop with Ctrl-C", flush=True)  # fmt: skip
    while proc.poll() is None and not stop.wait(1.0):
        pass
    if proc.poll() is None:
        shutdown(proc)
    return proc.wait()


def wait_until_up(
    proc: subprocess.Popen, health_url: str, stop: threading.Event, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Return once the api-server answers and every component reports healthy; StartFailed when
    `airflow standalone` exits first or `timeout_s` passes (naming what was not up)."""
    deadline = time.monotonic() + timeout_s
    down: list[str] = ["api-server"]
    while not stop.is_set():
        if proc.poll() is not None:
            raise StartFailed(
                f"airflow standalone exited with {proc.returncode} at start (see its log above)"
            )
        down = _components_down(health_url)
        if not down:
            return
        if time.monotonic() > deadline:
            raise StartFailed(f"{', '.join(down)} not up within {timeout_s:.0f} s (see the log above)")
        stop.wait(1.0)


def _components_down(health_url: str) -> list[str]:
    """The components not (yet) healthy according to the api-server; ["api-server"] when it is silent."""
    try:
        with urllib.request.urlopen(health_url, timeout=5) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return ["api-server"]
    return [name for name in COMPONENTS if (health.get(name) or {}).get("status") != "healthy"]


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, else its zombie keeps the group "alive"
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def shutdown(proc: subprocess.Popen, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """What a terminal's Ctrl-C does, SIGINT to the whole group, so that every component takes its
    clean-shutdown path; components still alive after `grace_s` (the LocalExecutor can wait forever on
    a dead worker, apache/airflow#67870) get a second SIGINT, then SIGTERM, then SIGKILL, so that
    nothing is left behind."""
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.5)
        if not _group_alive(proc):
            return
        print(f"[airflow] components still running {grace_s:.0f} s after {sig.name}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
