"""Collect one run's metrics into a report (one HTML page + summary.json) and, when configured, push
them to a Prometheus Pushgateway.

    python -m jobs.metrics --run-dir DIR [--dag-id D] [--run-id R] [--stage-times JSON|FILE]
                           [--pushgateway URL] [--output DIR/report]

Sources, all optional except the run directory: stage wall times from Airflow (--stage-times, written
by the DAG's stage_times task; this job never imports Airflow), the Spark event logs every Spark stage
writes under DIR (task metrics per stage and application), each stage's metrics.json (events, bytes,
per-file read latency), training history.json and evaluation metrics.json (AUC per class), and the
plots the stages drew (di-muon spectrum, ROC). Metric names: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobs.common import cli
from jobs.common.errors import BadInputError, UsageError
from jobs.common.eventlog import ApplicationSummary, read_applications
from jobs.common.storage import atomic_output_dir, filesystem, write_json

log = logging.getLogger("jobs.metrics")

SKIP_DIRS = {"report", "spark-events", "checkpoints", "tensorboard", "model.keras"}
MAX_DEPTH = 4
PUSH_JOB = "colliderflow"
QUANTILES = {"p50": "0.5", "p90": "0.9", "p99": "0.99"}


# ------------------------------------------------------------------------------------------- inputs
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
    """Output directories below the run directory holding a metrics.json or history.json, keyed by
    their path relative to the run directory; with the parsed files and the PNGs found there."""
    fs, root = filesystem(run_dir)
    if not fs.isdir(root):
        raise BadInputError(run_dir, "--run-dir: no such directory")
    root = root.rstrip("/")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].strip("/")
        parts = rel.split("/")
        if len(parts) > MAX_DEPTH or any(p in SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        name = parts[-1]
        key = "/".join(parts[:-1]) or "."
        if name in ("metrics.json", "history.json", "cutflow.json"):
            out.setdefault(key, {"pngs": {}})[name.removesuffix(".json")] = _read_json(fs, path)
        elif name.endswith(".png"):
            out.setdefault(key, {"pngs": {}})["pngs"][name] = path
        elif name == "predictions.npz":
            out.setdefault(key, {"pngs": {}})["predictions"] = path
    return {k: v for k, v in out.items() if "metrics" in v or "history" in v}


def stage_name(key: str, output: dict[str, Any], taken: set[str]) -> str:
    """The job's own name for its stage (metrics.json 'stage'), else the directory."""
    name = (output.get("metrics") or {}).get("stage") or key.rsplit("/", 1)[-1]
    return key if name in taken else name


# ------------------------------------------------------------------------------------------ summary
def build_summary(
    run_dir: str,
    dag_id: str,
    run_id: str,
    times: dict[str, Any],
    outputs: dict[str, dict[str, Any]],
    apps: list[ApplicationSummary],
) -> dict[str, Any]:
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
            }
    spark_apps = []
    for app in apps:
        d = app.to_dict()
        d["stage"] = app_stage.get(app.app_id) or app.app_name.removeprefix("colliderflow-")
        # The application a stage's metrics.json names produced its output; others under the same
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
        "stages": stages,
        "spark": {"applications": spark_apps},
        "training": {k: v for k, v in training.items() if k != "history"},
        "evaluation": evaluation,
    }


# -------------------------------------------------------------------------------------------- plots
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use("default")
    return plt


def _save(plt, fig, path: str) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_stage_times(summary: dict[str, Any], path: str) -> bool:
    """Horizontal bars: Airflow task wall time per stage (job wall time where Airflow gave none)."""
    times = {k: v.get("duration_seconds") for k, v in summary["stage_times"].items()}
    if not any(v is not None for v in times.values()):
        times = {k: v.get("wall_seconds") for k, v in summary["stages"].items()}
    times = {k: v for k, v in times.items() if v is not None}
    if not times:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(times) + 1.5))
    names = list(times)
    ax.barh(names, [times[n] for n in names], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel("wall time [s]")
    ax.set_title("Stage wall times")
    return _save(plt, fig, path)


def plot_io_latency(summary: dict[str, Any], path: str) -> bool:
    """Per-file read latency percentiles (p50/p90/p99/max) of every reading stage, log scale."""
    rows = [
        (f"{stage}: {os.path.basename(url)}", lat)
        for stage, s in summary["stages"].items()
        for url, lat in s["files"].items()
        if lat.get("p50") is not None
    ]
    if not rows:
        return False
    import numpy as np

    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 2))
    y = np.arange(len(rows))
    for q, marker in (("p50", "o"), ("p90", "s"), ("p99", "^"), ("max", "x")):
        ax.scatter([max(r[1].get(q, 0.0), 1e-4) for r in rows], y, marker=marker, label=q)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("read latency [ms]")
    ax.set_title("Storage read latency per file")
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


def plot_spark_stages(summary: dict[str, Any], path: str) -> bool:
    """Executor time split per Spark application: CPU (JVM), GC, other run time (Python, I/O)."""
    apps = summary["spark"]["applications"]
    if not apps:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(apps) + 1.5))
    labels = [f"{a['stage']} ({a['app_id']})" for a in apps]
    cpu = [a["totals"]["executor_cpu_seconds"] for a in apps]
    gc = [a["totals"]["gc_seconds"] for a in apps]
    other = [
        max(0.0, a["totals"]["executor_run_seconds"] - c - g) for a, c, g in zip(apps, cpu, gc, strict=True)
    ]
    ax.barh(labels, cpu, label="JVM CPU", color="#4c72b0")
    ax.barh(labels, gc, left=cpu, label="GC", color="#dd8452")
    ax.barh(
        labels,
        other,
        left=[c + g for c, g in zip(cpu, gc, strict=True)],
        label="other (Python, I/O)",
        color="#55a868",
    )
    ax.invert_yaxis()
    ax.set_xlabel("executor time summed over tasks [s]")
    ax.set_title("Spark executor time")
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


def stage_plots(outputs: dict[str, dict[str, Any]], summary: dict[str, Any], staging: str) -> dict[str, str]:
    """Plots the stages drew (copied) plus the ones only a whole-run view can draw."""
    plots: dict[str, str] = {}
    for key, output in outputs.items():
        for name, src in sorted(output["pngs"].items()):
            if name in ("dimuon_mass.png", "roc.png", "loss.png"):
                fs, _ = filesystem(summary["run_dir"])
                dest = f"{key.replace('/', '_')}_{name}" if key != "." else name
                with fs.open(src, "rb") as f_in, open(os.path.join(staging, dest), "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
                plots[dest] = {
                    "dimuon_mass.png": "Di-muon mass spectrum",
                    "roc.png": "ROC curves",
                    "loss.png": "Loss curves",
                }[name]
        if output.get("history") and not any("loss.png" in o["pngs"] for o in outputs.values()):
            from jobs.evaluate import plot_history

            dest = f"{key.replace('/', '_')}_loss.png"
            plot_history(output["history"], os.path.join(staging, dest))
            plots[dest] = "Loss curves"
    for name, title, fn in (
        ("stage_times.png", "Stage wall times", plot_stage_times),
        ("io_latency.png", "Storage read latency", plot_io_latency),
        ("spark_executor_time.png", "Spark executor time", plot_spark_stages),
    ):
        if fn(summary, os.path.join(staging, name)):
            plots[name] = title
    return plots


# --------------------------------------------------------------------------------------------- html
def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(summary: dict[str, Any], plots: dict[str, str], staging: str) -> str:
    s = summary
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>colliderflow run report: {html.escape(s['dag_id'])} {html.escape(s['run_id'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(s['dag_id'])} — {html.escape(s['run_id'])}</h1>",
        f"<p>Run directory <code>{html.escape(s['run_dir'])}</code>, generated {s['generated_at']}.</p>",
    ]
    if s["stage_times"]:
        parts.append("<h2>Airflow tasks</h2>")
        parts.append(
            _table(
                ["task", "state", "wall time [s]", "try"],
                [
                    (k, v.get("state"), v.get("duration_seconds"), v.get("try_number"))
                    for k, v in s["stage_times"].items()
                ],
            )
        )
    if s["stages"]:
        parts.append("<h2>Stages</h2>")
        parts.append(
            _table(
                [
                    "stage",
                    "events",
                    "events/s",
                    "job wall [s]",
                    "bytes read",
                    "reads",
                    "read p50 [ms]",
                    "read p99 [ms]",
                    "skipped files",
                ],
                [
                    (
                        k,
                        v["events"],
                        v["events_per_second"],
                        v["wall_seconds"],
                        v["bytes_read"],
                        v["read_calls"],
                        (v["io_latency_ms"] or {}).get("p50"),
                        (v["io_latency_ms"] or {}).get("p99"),
                        len(v["skipped_files"]),
                    )
                    for k, v in s["stages"].items()
                ],
            )
        )
    if s["spark"]["applications"]:
        parts.append("<h2>Spark (from the event logs)</h2>")
        rows = []
        for a in s["spark"]["applications"]:
            for st in a["stages"]:
                rows.append(
                    (
                        f"{a['stage']} ({a['app_id']}) / stage {st['stage_id']}.{st['attempt']}",
                        st["num_tasks"],
                        st["tasks"],
                        st["failed_tasks"],
                        st["duration_seconds"],
                        st["executor_run_seconds"],
                        st["executor_cpu_seconds"],
                        st["gc_seconds"],
                        st["input_bytes"],
                        st["shuffle_read_bytes"],
                        st["shuffle_write_bytes"],
                    )
                )
        parts.append(
            _table(
                [
                    "application / stage",
                    "tasks planned",
                    "tasks run",
                    "failed",
                    "duration [s]",
                    "executor run [s]",
                    "executor CPU [s]",
                    "GC [s]",
                    "input bytes",
                    "shuffle read",
                    "shuffle write",
                ],
                rows,
            )
        )
    for err in s["spark"].get("unreadable_event_logs", []):
        where, problem = html.escape(err["log"]), html.escape(err["problem"])
        parts.append(f"<p>Unreadable event log <code>{where}</code>: {problem}</p>")
    for name, st in s["stages"].items():
        cuts = (st.get("cutflow") or {}).get("cuts") or []
        if cuts:
            parts.append(f"<h2>Cut flow: {html.escape(name)}</h2>")
            rows = [(c.get("cut"), c.get("events"), c.get("fraction_of_previous"), c.get("fraction_of_total"))
                    for c in cuts]  # fmt: skip
            parts.append(_table(["cut", "events", "of previous", "of total"], rows))
    if s["evaluation"]:
        ev = s["evaluation"]
        parts.append("<h2>Evaluation</h2>")
        parts.append(_table(["class", "ROC AUC"], sorted(ev["auc"].items())))
        parts.append(f"<p>accuracy {ev.get('accuracy')}, {ev.get('events')} test events</p>")
    if s["training"]:
        tr = s["training"]
        parts.append("<h2>Training</h2>")
        parts.append(
            _table(
                ["epochs", "training events/s", "final loss", "final val_loss"],
                [
                    (
                        tr["epochs"],
                        tr.get("training_events_per_second"),
                        tr["final"].get("loss"),
                        tr["final"].get("val_loss"),
                    )
                ],
            )
        )
    parts.append("<h2>Plots</h2>")
    for name, title in plots.items():
        with open(os.path.join(staging, name), "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(
            f"<h3>{html.escape(title)}</h3><a href='{name}'>"
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'></a>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- Pushgateway
def prometheus_registry(summary: dict[str, Any]):
    """The run's metrics as Prometheus gauges/counters; dag and run are the push's grouping key."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

    disable_created_metrics()
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, labels: Sequence[str] = ("stage",)) -> Gauge:
        return Gauge(name, doc, list(labels), registry=reg)

    wall = gauge("colliderflow_stage_wall_seconds", "Wall time of a stage (the Airflow task).")
    eps = gauge("colliderflow_events_per_second", "Events processed per second by a stage.")
    events = Counter("colliderflow_events", "Events read by a stage.", ["stage"], registry=reg)
    io_bytes = Counter(
        "colliderflow_io_read_bytes", "Bytes read from storage by a stage.", ["stage"], registry=reg
    )
    latency = gauge(
        "colliderflow_io_read_latency_seconds",
        "Storage read latency quantile of a stage.",
        ("stage", "quantile"),
    )
    run_s = gauge("colliderflow_spark_executor_run_seconds", "Executor run time summed over Spark tasks.")
    cpu_s = gauge(
        "colliderflow_spark_executor_cpu_seconds", "Executor (JVM) CPU time summed over Spark tasks."
    )
    gc_s = gauge("colliderflow_spark_gc_seconds", "JVM GC time summed over Spark tasks.")
    sh_r = gauge("colliderflow_spark_shuffle_read_bytes", "Shuffle bytes read by Spark tasks.")
    sh_w = gauge("colliderflow_spark_shuffle_write_bytes", "Shuffle bytes written by Spark tasks.")
    auc = gauge("colliderflow_auc", "One-vs-rest ROC AUC of a class on the test set.", ("class",))
    train_eps = gauge("colliderflow_training_events_per_second", "Training throughput (events/s).", ())

    times = {k: v.get("duration_seconds") for k, v in summary["stage_times"].items()}
    for name, st in summary["stages"].items():
        times.setdefault(name, st["wall_seconds"])
        if st["events"] is not None:
            events.labels(name).inc(st["events"])
        if st["events_per_second"] is not None:
            eps.labels(name).set(st["events_per_second"])
        if st["bytes_read"]:
            io_bytes.labels(name).inc(st["bytes_read"])
            for q, value in QUANTILES.items():
                if (st["io_latency_ms"] or {}).get(q) is not None:
                    latency.labels(name, value).set(st["io_latency_ms"][q] / 1e3)
    for name, seconds in times.items():
        if seconds is not None:
            wall.labels(name).set(seconds)
    per_stage: dict[str, dict[str, float]] = {}
    apps = summary["spark"]["applications"]
    producing = {a["stage"] for a in apps if a["produced_output"]}
    for app in apps:
        if app["stage"] in producing and not app["produced_output"]:
            continue  # an earlier attempt: its time is not the stage's
        acc = per_stage.setdefault(app["stage"], {})
        for key in (
            "executor_run_seconds",
            "executor_cpu_seconds",
            "gc_seconds",
            "shuffle_read_bytes",
            "shuffle_write_bytes",
        ):
            acc[key] = acc.get(key, 0) + app["totals"][key]
    for name, acc in per_stage.items():
        run_s.labels(name).set(acc["executor_run_seconds"])
        cpu_s.labels(name).set(acc["executor_cpu_seconds"])
        gc_s.labels(name).set(acc["gc_seconds"])
        sh_r.labels(name).set(acc["shuffle_read_bytes"])
        sh_w.labels(name).set(acc["shuffle_write_bytes"])
    for cls, value in (summary["evaluation"].get("auc") or {}).items():
        if value is not None:  # undefined on a test set without the class
            auc.labels(cls).set(value)
    if summary["training"].get("training_events_per_second") is not None:
        train_eps.set(summary["training"]["training_events_per_second"])
    return reg


def push(summary: dict[str, Any], url: str, timeout: float = 10.0) -> None:
    """Replace this run's group (job=colliderflow, dag, run) on the Pushgateway: a rerun overwrites."""
    from prometheus_client import push_to_gateway

    grouping = {"dag": summary["dag_id"], "run": summary["run_id"]}
    try:
        push_to_gateway(
            url, job=PUSH_JOB, registry=prometheus_registry(summary), grouping_key=grouping, timeout=timeout
        )
    except OSError as exc:
        raise BadInputError(url, f"--pushgateway: push failed ({exc})") from None
    log.info("pushed run metrics to %s (job=%s, dag=%s, run=%s)", url, PUSH_JOB, *grouping.values())


# ---------------------------------------------------------------------------------------------- main
def collect(
    run_dir: str,
    output: str | None = None,
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
    stage_times: str | None = None,
    pushgateway: str | None = None,
) -> dict[str, Any]:
    """Write report.html, the plots and summary.json into `output` (atomically); push if asked."""
    t0 = time.perf_counter()
    times = load_stage_times(stage_times)
    dag_id = dag_id or times.get("dag_id") or "unknown"
    run_id = run_id or times.get("run_id") or run_dir.rstrip("/").rsplit("/", 1)[-1]
    output = output or f"{run_dir.rstrip('/')}/report"
    outputs = find_stage_outputs(run_dir)
    log_errors: list[dict[str, str]] = []
    apps = read_applications(run_dir.rstrip("/"), errors=log_errors)
    for err in log_errors:
        log.warning("skipped event log %s: %s", err["log"], err["problem"])
    summary = build_summary(run_dir, dag_id, run_id, times, outputs, apps)
    summary["spark"]["unreadable_event_logs"] = log_errors
    with atomic_output_dir(output) as staging:
        plots = stage_plots(outputs, summary, staging)
        summary["plots"] = plots
        summary["collect_seconds"] = time.perf_counter() - t0
        with open(os.path.join(staging, "report.html"), "w") as f:
            f.write(render_html(summary, plots, staging))
        write_json(os.path.join(staging, "summary.json"), summary)
    log.info(
        "report: %s/report.html (%d stages, %d Spark applications, %d plots)",
        output,
        len(summary["stages"]),
        len(apps),
        len(plots),
    )
    if pushgateway:
        push(summary, pushgateway)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.metrics", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="the run's output directory (local path or fsspec URL)")
    p.add_argument(
        "--output", default=None, help="report directory (default RUN_DIR/report; replaced atomically)"
    )
    p.add_argument("--dag-id", default=None, help="DAG id (label 'dag'; default: from --stage-times)")
    p.add_argument(
        "--run-id", default=None, help="run id (label 'run'; default: from --stage-times or the dir)"
    )
    p.add_argument("--stage-times", default=None, help="Airflow task durations: inline JSON or a JSON file")
    p.add_argument(
        "--pushgateway",
        default=None,
        help="Pushgateway URL (unset or empty: $COLLIDERFLOW_PUSHGATEWAY; that unset too: no push)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.pushgateway = (args.pushgateway or "").strip() or os.environ.get("COLLIDERFLOW_PUSHGATEWAY") or None
    if args.pushgateway and "://" not in args.pushgateway:
        raise UsageError(f"--pushgateway: expected a URL like http://host:9091, got {args.pushgateway!r}")
    collect(
        args.run_dir,
        args.output,
        dag_id=args.dag_id,
        run_id=args.run_id,
        stage_times=args.stage_times,
        pushgateway=args.pushgateway,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
