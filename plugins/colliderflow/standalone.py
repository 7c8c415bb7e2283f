"""`make airflow`: `airflow standalone` (api-server, scheduler, dag-processor, triggerer) with the
project's DAGs and plugins, example DAGs off and a known admin login. Ctrl-C stops it cleanly: the
signal is forwarded as SIGINT, which `airflow standalone` handles (SIGTERM would leave orphans)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from colliderflow import environment

SHUTDOWN_GRACE_S = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m colliderflow.standalone", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW__API__PORT", "8080")))
    args = parser.parse_args(argv)
    env = environment.airflow_env()
    env["AIRFLOW__API__PORT"] = str(args.port)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://localhost:{args.port}")
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{args.port}/execution/")
    environment.prepare(env)
    password = environment.admin_password(env)
    print(
        f"[airflow] UI: http://localhost:{args.port}  login: {environment.ADMIN_USER} / {password}\n"
        f"[airflow] AIRFLOW_HOME={env['AIRFLOW_HOME']}; stop with Ctrl-C",
        flush=True,
    )
    exe = os.path.join(os.path.dirname(sys.executable), "airflow")
    # own session: a terminal's Ctrl-C reaches only us, and shutdown() signals the whole group. SIGINT
    # back to its default in the child, since a shell starting us in the background leaves it ignored.
    proc = subprocess.Popen(
        [exe, "standalone"],
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while proc.poll() is None and not stop.wait(1.0):
        pass
    if proc.poll() is None:
        shutdown(proc)
    return proc.wait()


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
