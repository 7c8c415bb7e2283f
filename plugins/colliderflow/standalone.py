"""`make airflow`: `airflow standalone` (api-server, scheduler, dag-processor, triggerer) with the
project's DAGs and plugins, example DAGs off and a known admin login. Ctrl-C stops it cleanly: the
signal is forwarded as SIGINT, which `airflow standalone` handles (SIGTERM would leave orphans)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from colliderflow import environment


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
    # own session: a terminal's Ctrl-C reaches only us, and we forward exactly one SIGINT. SIGINT back
    # to its default in the child, since a shell starting us in the background leaves it ignored.
    proc = subprocess.Popen(
        [exe, "standalone"],
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )

    def forward(signum: int, _frame) -> None:
        proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
