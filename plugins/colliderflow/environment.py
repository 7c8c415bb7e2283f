"""The embedded default Airflow: SQLite metadata DB under AIRFLOW_HOME, the project's dags/ and
plugins/, no example DAGs, a known admin login, and the pools the DAGs use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import IO

from colliderflow.dagkit import PROJECT_ROOT

ADMIN_USER = "admin"
# Airflow local settings that make SQLite safe for standalone's processes and a CLI call beside them
# (colliderflow.sqlite_db says why).
SQLITE_LOCAL_SETTINGS = Path(__file__).parent / "embedded_local_settings"
POOLS = {
    "spark": (2, "Spark stages (bounds concurrent cluster-heavy tasks)"),
    "training": (1, "TensorFlow training"),
}


def airflow_env(home: str | None = None, password: str | None = None) -> dict[str, str]:
    """Environment for every `airflow` command of the embedded default."""
    home = os.path.abspath(home or os.environ.get("AIRFLOW_HOME") or PROJECT_ROOT / ".airflow")
    password = password or os.environ.get("COLLIDERFLOW_ADMIN_PASSWORD", "admin")
    os.makedirs(home, exist_ok=True)
    pw_file = os.path.join(home, "passwords.json")
    with open(pw_file, "w") as f:
        json.dump({ADMIN_USER: password}, f)
    env = dict(os.environ)
    python_path = [str(PROJECT_ROOT), env.get("PYTHONPATH")]
    sqlite = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite")
    own_local_settings = os.path.exists(os.path.join(home, "config", "airflow_local_settings.py"))
    if sqlite and not own_local_settings:
        python_path.insert(0, str(SQLITE_LOCAL_SETTINGS))
    env.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": pw_file,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # a laptop: a handful of LocalExecutor workers, not one per core of a server
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            # Airflow skips storing a changed DAG parsed within 30 s of the last write: a run started
            # right after the DAG or its data root changed (make demo twice, a test) would then run
            # the previous version's tasks, asset URIs included
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": env.get(
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0"
            ),
            "COLLIDERFLOW_BACKEND": env.get("COLLIDERFLOW_BACKEND", "local"),
            # `airflow standalone` starts its components as `airflow ...` from PATH: this environment's
            "PATH": os.pathsep.join(filter(None, [os.path.dirname(sys.executable), env.get("PATH")])),
            "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
        }
    )
    return env


def admin_password(env: dict[str, str]) -> str:
    with open(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
        return json.load(f)[ADMIN_USER]


def airflow_exe() -> str:
    """The `airflow` CLI of this interpreter's environment."""
    return os.path.join(os.path.dirname(sys.executable), "airflow")


def airflow(env: dict[str, str], *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the `airflow` CLI of this interpreter's environment."""
    return subprocess.run([airflow_exe(), *args], env=env, check=check, **kwargs)


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:")


class PrepareFailed(Exception):
    """The metadata DB or the pools could not be set up: one line naming the command and its cause."""


def prepare(env: dict[str, str], log: IO | None = None) -> None:
    """Create or upgrade the metadata DB and the pools, and release asset activations that would block
    the DAGs (colliderflow.asset_activation says why); idempotent, output into `log` if given."""
    from colliderflow.asset_activation import release_asset_activations

    _step(env, log, "db", "migrate")
    for name, (slots, description) in POOLS.items():
        _step(env, log, "pools", "set", name, str(slots), description)
    released = release_asset_activations(env)
    if log:
        print(f"[colliderflow] asset activations released for the next parse: {released}", file=log)


def _step(env: dict[str, str], log: IO | None, *args: str) -> None:
    """One `airflow` CLI call; its failure as PrepareFailed with the last line it wrote (a missing or
    unwritable database says so there), its output in `log`."""
    done = airflow(
        env, *args, check=False, stdout=log or subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if log and done.stderr:
        log.write(done.stderr)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if EXCEPTION_LINE.match(line)]  # a traceback's last exception
        cause = (errors or lines or ["no output"])[-1][:300]
        raise PrepareFailed(f"`airflow {' '.join(args[:2])}` failed (exit {done.returncode}): {cause}")
