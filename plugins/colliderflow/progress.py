"""What `make demo` shows while a DAG runs: one line per task as it finishes, with its state, its
seconds and the figure that says it worked (events, pairs, AUC), read from the metadata DB and the
run's outputs. Airflow's, Spark's and TensorFlow's own output goes to the demo's log file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from colliderflow.dagkit import run_dir

FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")


@dataclass(frozen=True)
class TaskDone:
    task_id: str
    state: str
    seconds: float | None


def metadata_url(env: dict[str, str]) -> str:
    """The metadata DB the environment's Airflow uses (its embedded default: SQLite in AIRFLOW_HOME)."""
    return env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{env['AIRFLOW_HOME']}/airflow.db"


def metadata_engine(env: dict[str, str]) -> sa.Engine:
    """An engine on that DB; on SQLite a statement waits out a writer (up to 60 s) instead of failing."""
    url = metadata_url(env)
    return sa.create_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})


class RunWatcher:
    """The newest run of `dag_id` created after this watcher: its id and its tasks as they finish."""

    def __init__(self, env: dict[str, str], dag_id: str):
        self.engine = metadata_engine(env)
        self.dag_id = dag_id
        self.reported: set[str] = set()
        self.run_id: str | None = None
        with self.engine.connect() as db:
            self.after = db.execute(
                sa.text("SELECT COALESCE(MAX(id), 0) FROM dag_run WHERE dag_id = :d"), {"d": dag_id}
            ).scalar_one()

    def finished(self) -> list[TaskDone]:
        """Tasks of the run that finished since the last call, in the order they finished."""
        with self.engine.connect() as db:
            if self.run_id is None:
                self.run_id = db.execute(
                    sa.text("SELECT run_id FROM dag_run WHERE dag_id = :d AND id > :a ORDER BY id LIMIT 1"),
                    {"d": self.dag_id, "a": self.after},
                ).scalar_one_or_none()
                if self.run_id is None:
                    return []
            rows = db.execute(
                sa.text(
                    "SELECT task_id, map_index, state, duration FROM task_instance "
                    "WHERE dag_id = :d AND run_id = :r AND state IN :s ORDER BY end_date, task_id"
                ).bindparams(sa.bindparam("s", expanding=True)),
                {"d": self.dag_id, "r": self.run_id, "s": list(FINISHED)},
            ).all()
        done = []
        for task_id, map_index, state, duration in rows:
            name = task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"
            if name not in self.reported:
                self.reported.add(name)
                done.append(TaskDone(name, state, duration))
        return done

    def close(self) -> None:
        self.engine.dispose()


def sidecar(directory: str, name: str) -> dict[str, Any] | None:
    """A stage's JSON beside its data: `_name` (the spelling Parquet readers skip) or `name`."""
    for candidate in (f"_{name}", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None


def stage_metrics(run: str, stage_dir: str) -> dict[str, Any]:
    return sidecar(os.path.join(run, stage_dir), "metrics.json") or {}


def events(run: str, stage_dir: str, kept: str = "kept") -> str:
    """Events read, and written where a stage selects or balances ("30,000 events -> 15,062 kept")."""
    m = stage_metrics(run, stage_dir)
    if not isinstance(m.get("events"), int):
        return ""
    written = m.get("events_written")
    return f"{m['events']:,} events" + (f" -> {written:,} {kept}" if isinstance(written, int) else "")


def training(run: str) -> str:
    m = stage_metrics(run, "model")
    final = m.get("final") or {}
    accuracy = final.get("val_accuracy", final.get("accuracy"))
    shown = f", validation accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
    return f"{m['epochs_run']} epochs{shown}" if "epochs_run" in m else ""


def auc_line(run: str) -> str:
    """The classifier's AUC per class, as the evaluation stage measured it ("qcd 0.991, ...")."""
    auc = (sidecar(os.path.join(run, "evaluation"), "metrics.json") or {}).get("auc") or {}
    return ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in auc.items())


# task id -> its key figure from the run directory
FIGURES: dict[str, Callable[[str], str]] = {
    "dimuon": lambda run: (
        events(run, "dimuon") + f", {stage_metrics(run, 'dimuon').get('pairs', 0):,} opposite-charge pairs"
    ),
    "ingest": lambda run: events(run, "features", "with an isolated lepton"),
    "prepare": lambda run: events(run, "prepared", "in balanced classes"),
    "tfrecords": lambda run: events(run, "tfrecords"),
    "train": training,
    "evaluate": lambda run: f"AUC {auc_line(run)}",
    "collect_metrics": lambda run: "report.html" if os.path.exists(f"{run}/report/report.html") else "",
}


def key_figure(task: TaskDone, run: str) -> str:
    """The task's key figure, or "" (a figure is a courtesy: it never fails the demo)."""
    if task.state != "success" or task.task_id not in FIGURES:
        return ""
    try:
        return FIGURES[task.task_id](run)
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def line(dag_id: str, task: TaskDone, output_root: str, run_id: str) -> str:
    seconds = f"{task.seconds:5.0f} s" if task.seconds is not None else "      "
    figure = key_figure(task, run_dir(output_root, dag_id, run_id))
    return f"[demo] {dag_id}.{task.task_id:<16} {task.state:<8} {seconds}  {figure}".rstrip()
