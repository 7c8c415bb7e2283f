"""Shared DAG conventions: default retries with backoff, per-run output directories, and the Jinja
filters the DAG files use. No physics here."""

from __future__ import annotations

import os
import pathlib
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import TaskGroup

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


def data_root() -> str:
    """Where samples and run outputs live unless a run says otherwise: the deployment's storage root
    (COLLIDERFLOW_STORAGE_ROOT, set by the chart and docker-compose: an s3:// or oci:// URL), else
    COLLIDERFLOW_DATA, else the demo's out/demo."""
    root = os.environ.get("COLLIDERFLOW_STORAGE_ROOT") or os.environ.get("COLLIDERFLOW_DATA")
    return (root or str(PROJECT_ROOT / "out" / "demo")).rstrip("/")


def default_args() -> dict[str, Any]:
    return {
        "owner": "colliderflow",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_execute_callback": record_try_number,
    }


# The XCom key under which every task records its try number (see record_try_number).
TRY_NUMBER_KEY = "try_number"


def record_try_number(context: Any) -> None:
    """Every task's on_execute_callback: its try number as an XCom. Airflow 3's execution API tells
    stage_times the states and durations of the run's other tasks but not their tries, and the run
    report shows which attempt produced each output. (A callback: Airflow's own way to hand every task
    a callable through default_args, stored as a flag, not as source text in the serialized DAG.)"""
    ti = context["ti"]
    ti.xcom_push(TRY_NUMBER_KEY, ti.try_number)


def safe_path(value: str) -> str:
    """A run id as a path component: ':' and '+' (from timestamps) and other oddities become '-'."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", str(value)).strip("-")


def run_dir(output_root: str, dag_id: str, run_id: str) -> str:
    return f"{output_root.rstrip('/')}/{dag_id}/{safe_path(run_id)}"


def previous_run_dir(ti: Any, output_root: str, dag_id: str, folder: str = "") -> str:
    """Jinja macro: the run directory (or its `folder`) of this DAG's previous successful run, "" when
    there is none (the first run, or a run without a logical date)."""
    previous = ti.get_previous_dagrun(state="success")
    if previous is None:
        return ""
    return run_dir(output_root, dag_id, previous.run_id) + (f"/{folder}" if folder else "")


# Jinja: the run's output directory, <output_root>/<dag_id>/<run id>; every stage writes below it.
RUN_DIR = "{{ run_dir(params.output_root, dag.dag_id, run_id) }}"
USER_DEFINED_FILTERS = {"safe_path": safe_path}
USER_DEFINED_MACROS = {"run_dir": run_dir, "previous_run_dir": previous_run_dir}


def nightly(cron: str) -> dict[str, Any]:
    """The DAG arguments every colliderflow DAG shares: a nightly `cron` schedule from 2026-01-01 without
    catch-up, retries with backoff on every task, and the Jinja helpers the stage arguments use."""
    return {
        "schedule": cron,
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "catchup": False,
        "default_args": default_args(),
        "user_defined_filters": USER_DEFINED_FILTERS,
        "user_defined_macros": USER_DEFINED_MACROS,
    }


def task_group(group_id: str, tooltip: str) -> TaskGroup:
    """A group that folds secondary tasks into one row of the grid and one box of the graph; the task
    ids stay as they are (no group prefix), so links, logs and the CLI keep using them. (Airflow is
    imported here: the launchers import this module and must start fast.)"""
    from airflow.sdk import TaskGroup

    return TaskGroup(group_id, prefix_group_id=False, tooltip=tooltip)


def results_group() -> TaskGroup:
    """The bookkeeping after the last stage: stage times, the run report, (dl_trigger) the quality gate."""
    return task_group("results", "after the last stage: stage times, the run report and its metrics")
