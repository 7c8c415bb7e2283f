"""What a run left behind, gathered into summary.json, from which the report, the plots and the
pushed metrics are all drawn: the Airflow task times (--stage-times, written by the DAG's stage_times
task, so that this job never imports Airflow), each stage's _metrics.json / history.json /
cutflow.json, and the Spark applications of the event logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jobs.core.errors import BadInputError
from jobs.core.job_metrics import key_figures
from jobs.core.storage import METRICS_FILE, filesystem
from jobs.core.store_probe import check_input_dir
from jobs.metrics.eventlog import ApplicationSummary

SKIP_DIRS = {"report", "spark-events", "checkpoints", "tensorboard", "model.keras"}
MAX_DEPTH = 4
# the JSON files a stage leaves beside its output, and their keys in a stage output
STAGE_FILES = {METRICS_FILE: "metrics", "history.json": "history", "cutflow.json": "cutflow"}


def load_stage_times(value: str | None) -> dict[str, Any]:
    """--stage-times: inline JSON or a file: {"dag_id", "run_id", "tasks": [{"task_id", "state",
    "duration_seconds"}, ...]} (what colliderflow.collect writes) or a plain {task_id: seconds}."""
    if not value:
        return {"tasks": []}
    text = value
    if not value.lstrip().startswith(("{", "[")):
        fs, path = filesystem(value)
        if not fs.exists(path):
            raise BadInputError(value, "--stage-times: no such file")
        text = fs.cat_file(path).decode()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError("--stage-times", f"not JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(data, dict) and "tasks" not in data:
        data = {"tasks": [{"task_id": k, "duration_seconds": v, "state": "success"} for k, v in data.items()]}
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "task_id" in t for t in tasks):
        raise BadInputError(
            "--stage-times", "expected {'tasks': [{'task_id': ..., 'duration_seconds': ...}]}"
        )
    for t in tasks:
        d = t.get("duration_seconds")
        if d is not None and (not isinstance(d, int | float) or d < 0):
            raise BadInputError("--stage-times", f"task {t['task_id']}: duration {d!r} is not a number >= 0")
    return data


def _read_json(fs, path: str) -> Any:
    try:
        return json.loads(fs.cat_file(path))
    except json.JSONDecodeError as exc:
        raise BadInputError(path, f"not JSON ({exc.msg} at line {exc.lineno})") from None


def find_stage_outputs(run_dir: str) -> dict[str, dict[str, Any]]:
    """Output directories below the run directory holding a _metrics.json or history.json, keyed by
    their path relative to the run directory; with the parsed files and the PNGs found there."""
    check_input_dir(run_dir, "--run-dir")
    fs, root = filesystem(run_dir)
    root = root.rstrip("/")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].strip("/")
        parts = rel.split("/")
        if len(parts) > MAX_DEPTH or any(p in SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        name = parts[-1]
        key = "/".join(parts[:-1]) or "."
        if name in STAGE_FILES:
            out.setdefault(key, {"pngs": {}})[STAGE_FILES[name]] = _read_json(fs, path)
        elif name.endswith(".png"):
            out.setdefault(key, {"pngs": {}})["pngs"][name] = path
        elif name == "predictions.npz":
            out.setdefault(key, {"pngs": {}})["predictions"] = path
    return {k: v for k, v in out.items() if "metrics" in v or "history" in v}


def stage_name(key: str, output: dict[str, Any], taken: set[str]) -> str:
    """The job's own name for its stage (_metrics.json 'stage'), else the directory."""
    name = (output.get("metrics") or {}).get("stage") or key.rsplit("/", 1)[-1]
    return key if name in taken else name


def in_pipeline_order(stages: dict[str, Any], task_ids: list[str]) -> dict[str, Any]:
    """The stages in the order of the DAG's tasks of the same name (stage_times lists them in pipeline
    order); stages without a task after them, as found."""
    position = {task_id: i for i, task_id in enumerate(task_ids)}
    return dict(sorted(stages.items(), key=lambda item: position.get(item[0], len(position))))


def build_summary(
    run_dir: str,
    dag_id: str,
    run_id: str,
    times: dict[str, Any],
    outputs: dict[str, dict[str, Any]],
    apps: list[ApplicationSummary],
) -> dict[str, Any]:
    """summary.json's content; collect adds the plots, the unreadable event logs and its own time."""
    stages: dict[str, dict[str, Any]] = {}
    app_stage: dict[str, str] = {}
    training: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    for key, output in outputs.items():
        name = stage_name(key, output, set(stages))
        m = output.get("metrics") or {}
        stages[name] = {
            "path": key,
            "events": m.get("events"),
            "events_per_second": m.get("events_per_second"),
            "wall_seconds": m.get("wall_seconds"),
            "bytes_read": m.get("bytes_read"),
            "read_calls": m.get("read_calls"),
            "io_latency_ms": m.get("io_latency_ms"),
            "files": {
                url: f.get("latency_ms", {}) | {"bytes_read": f.get("bytes_read")}
                for url, f in (m.get("files") or {}).items()
            },
            "skipped_files": m.get("skipped_files", []),
            "figures": key_figures(m),  # what it produced: events written, pairs, peaks, AUC, ...
        }
        if output.get("cutflow"):
            stages[name]["cutflow"] = output["cutflow"]
        app_id = (m.get("spark") or {}).get("app_id")
        if app_id:
            app_stage[app_id] = name
        if output.get("history") is not None:
            history = output["history"]
            training = {
                "stage": name,
                "epochs": len(history),
                "history": history,
                "final": history[-1] if history else {},
                "training_events_per_second": m.get("training_events_per_second"),
            }
        if isinstance(m.get("auc"), dict):
            evaluation = {
                "stage": name,
                "auc": m["auc"],
                "accuracy": m.get("accuracy"),
                "events": m.get("events"),
                "quality": m.get("quality"),  # the verdict against --min-auc and the previous run
            }
    spark_apps = []
    for app in apps:
        d = app.to_dict()
        d["stage"] = app_stage.get(app.app_id) or app.app_name.removeprefix("colliderflow-")
        # The application a stage's _metrics.json names produced its output; others under the same
        # stage are earlier attempts (killed or failed tries that Airflow retried).
        d["produced_output"] = app.app_id in app_stage
        spark_apps.append(d)
    tasks = {t["task_id"]: {k: v for k, v in t.items() if k != "task_id"} for t in times.get("tasks", [])}
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "run_dir": run_dir,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_times": tasks,
        "stages": in_pipeline_order(stages, list(tasks)),
        "spark": {"applications": spark_apps},
        "training": {k: v for k, v in training.items() if k != "history"},
        "evaluation": evaluation,
    }
