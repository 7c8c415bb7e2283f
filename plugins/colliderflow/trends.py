"""Nightly trends: the key figures of every run of a DAG over time, read from the runs' own run reports
(`report/summary.json`, written by jobs.metrics), no extra database. cms_dimuon: pairs, the Z peak's
fitted position and width, the J/ψ yield, events/s; dl_trigger: the AUC per class, accuracy, events
kept per stage, training throughput, and the quality verdict (a failed or flagged run is marked)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from colliderflow.run_files import Run

# figure -> (title, unit, the value's path in summary.json)
DIMUON, PEAKS = ("stages", "dimuon", "figures"), ("stages", "dimuon", "figures", "peaks")
FIGURES: dict[str, dict[str, tuple[str, str, tuple]]] = {
    "cms_dimuon": {
        "pairs": ("Opposite-charge pairs", "", ("stages", "dimuon", "figures", "pairs")),
        "z_mass": ("Z peak position", "GeV", ("stages", "dimuon", "figures", "peaks", "Z", "mass")),
        "z_width": (
            "Z peak width (Gaussian σ)",
            "GeV",
            ("stages", "dimuon", "figures", "peaks", "Z", "width"),
        ),
        "jpsi": ("J/ψ yield", "events", ("stages", "dimuon", "figures", "peaks", "J/psi", "events")),
        "rate": ("dimuon throughput", "events/s", ("stages", "dimuon", "events_per_second")),
    },
    "dl_trigger": {
        "auc_qcd": ("AUC QCD", "", ("evaluation", "auc", "qcd")),
        "auc_ttbar": ("AUC tt̄", "", ("evaluation", "auc", "ttbar")),
        "auc_wjets": ("AUC W+jets", "", ("evaluation", "auc", "wjets")),
        "accuracy": ("Accuracy", "", ("evaluation", "accuracy")),
        "ingested": ("Events written by ingest", "", ("stages", "ingest", "figures", "events_written")),
        "prepared": ("Events kept by prepare", "", ("stages", "prepare", "figures", "events_written")),
        "training_rate": ("Training throughput", "events/s", ("training", "training_events_per_second")),
    },
}
# figures drawn together on one plot
PANELS = {
    "cms_dimuon": [("pairs",), ("z_mass",), ("z_width",), ("jpsi",), ("rate",)],
    "dl_trigger": [
        ("auc_qcd", "auc_ttbar", "auc_wjets", "accuracy"),
        ("ingested", "prepared"),
        ("training_rate",),
    ],
}


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree if isinstance(tree, int | float) and not isinstance(tree, bool) else None


def read_summary(run: Run) -> dict | None:
    from jobs.core.storage import filesystem

    fs, path = filesystem(f"{run.directory}/report/summary.json")
    try:
        return json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return None


def trend_rows(dag_id: str, runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run that has a report: its date, id, state, figures and quality marks."""
    rows = []
    for run in runs:
        summary = read_summary(run)
        if summary is None:
            continue
        quality = (summary.get("evaluation") or {}).get("quality") or {}
        rows.append({
            "run_id": run.run_id,
            "date": run.start_date,
            "state": run.state,
            "figures": {k: _get(summary, path) for k, (_, _, path) in FIGURES.get(dag_id, {}).items()},
            "failed_quality": quality.get("passed") is False,
            "flagged": sorted(quality.get("flagged_drops") or {}),
        })  # fmt: skip
    return rows


def plot_png(dag_id: str, rows: list[dict[str, Any]], panel: tuple[str, ...]) -> str | None:
    """One panel of the trend as a base64 PNG: each figure against the run's date; runs that failed the
    quality gate drawn as red crosses."""
    points = [(r["date"], r) for r in rows if r["date"] is not None]
    if not any(r["figures"].get(k) is not None for _, r in points for k in panel):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for key in panel:
        xy = [
            (d, r["figures"][key], r["failed_quality"])
            for d, r in points
            if r["figures"].get(key) is not None
        ]
        if not xy:
            continue
        title, unit, _ = FIGURES[dag_id][key]
        ax.plot([d for d, _, _ in xy], [v for _, v, _ in xy], marker="o", label=title)
        bad = [(d, v) for d, v, failed in xy if failed]
        if bad:
            ax.scatter(*zip(*bad, strict=True), marker="x", s=80, color="#b00020", zorder=3)
    units = {FIGURES[dag_id][k][1] for k in panel}
    ax.set_ylabel(" / ".join(u for u in units if u) or "value")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
