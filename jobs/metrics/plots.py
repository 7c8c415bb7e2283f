"""The report's plots: the ones the stages drew, copied, and the ones only a view of the whole run can
draw (stage wall times, per-file read latency, Spark executor time). matplotlib is imported only when
a plot is drawn."""

from __future__ import annotations

import os
import shutil
from typing import Any

from jobs.core.storage import filesystem

# Plots a stage draws itself, copied into the report under these titles.
STAGE_PNGS = {
    "dimuon_mass.png": "Di-muon mass spectrum",
    "roc.png": "ROC curves",
    "roc_rejection.png": "Signal efficiency vs background rejection",
    "loss.png": "Loss curves",
}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use("default")
    return plt


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it hides no point or bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)


def _save(plt, fig, path: str) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    _legend_outside(ax)
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
    _legend_outside(ax)
    return _save(plt, fig, path)


def stage_plots(outputs: dict[str, dict[str, Any]], summary: dict[str, Any], staging: str) -> dict[str, str]:
    """Plots the stages drew (copied) plus the ones only a whole-run view can draw, written into
    `staging`: {file name: title}."""
    plots: dict[str, str] = {}
    for key, output in outputs.items():
        for name, src in sorted(output["pngs"].items()):
            if name in STAGE_PNGS:
                fs, _ = filesystem(summary["run_dir"])
                dest = f"{key.replace('/', '_')}_{name}" if key != "." else name
                with fs.open(src, "rb") as f_in, open(os.path.join(staging, dest), "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
                plots[dest] = STAGE_PNGS[name]
        if output.get("history") and not any("loss.png" in o["pngs"] for o in outputs.values()):
            from jobs.core.training_history import plot_history

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
