"""Nightly trends: the key figures of every run of a DAG against the night it stands for (its logical
date: a March backfill plots in March), read from the runs' own run reports (`report/summary.json`,
written by jobs.metrics), no extra database; each row names the partitions the run covered.
cms_dimuon: pairs, the Z peak's fitted position and width, the J/ψ yield, events/s, and the cumulative
curve over every partition so far (`cumulative/partitions.json`: pairs so far, the Z peak's position
and width with their uncertainties); dl_trigger: the AUC per class, accuracy, events kept per stage,
training throughput, and the quality verdict (a failed or flagged run is marked)."""

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
            "date": run.date,
            "partitions": partition_keys(summary),
            "state": run.state,
            "figures": {k: _get(summary, path) for k, (_, _, path) in FIGURES.get(dag_id, {}).items()},
            "failed_quality": quality.get("passed") is False,
            "flagged": sorted(quality.get("flagged_drops") or {}),
        })  # fmt: skip
    return rows


def partition_keys(summary: dict) -> list[str]:
    """The keys of the partitions a run's stages covered (from their _metrics.json figures)."""
    keys: list[str] = []
    for stage in (summary.get("stages") or {}).values():
        for p in (stage.get("figures") or {}).get("partitions") or []:
            if isinstance(p, dict) and str(p.get("key")) not in keys:
                keys.append(str(p.get("key")))
    return keys


def cumulative_rows(dag_id: str, runs: list[Run]) -> list[dict[str, Any]]:
    """The cumulative curve: after each partition (in the order they were recorded), the figures over
    every partition so far, from `<output root>/<dag>/cumulative/partitions.json` of the latest run's
    output root; [] when the DAG has no cumulative result."""
    from jobs.core.storage import filesystem

    if not runs:
        return []
    fs, path = filesystem(f"{runs[-1].output_root.rstrip('/')}/{dag_id}/cumulative/partitions.json")
    try:
        listed = json.loads(fs.cat_file(path))["partitions"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [{"key": p["key"], "date": _night(p["key"]), **(p.get("so_far") or {})} for p in listed]


def _night(key: str) -> Any:
    """A night's key as a date (`2026-03-01`, `2026-03-01.2`, `Run2012B@2026-03-01`); None otherwise."""
    from datetime import datetime

    text = key.rsplit("@", 1)[-1][:10]
    try:
        return datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return None


CUMULATIVE = {  # figure -> (title, unit, path in a cumulative row, path of its uncertainty)
    "pairs": ("Pairs so far", "", ("pairs",), None),
    "z_mass": ("Z position so far", "GeV", ("peaks", "Z", "mass"), ("peaks", "Z", "mass_error")),
    "z_width": ("Z width so far (σ)", "GeV", ("peaks", "Z", "width"), ("peaks", "Z", "width_error")),
}


def cumulative_png(rows: list[dict[str, Any]], key: str) -> str | None:
    """One panel of the cumulative curve, with error bars where the figure has an uncertainty."""
    title, unit, path, error = CUMULATIVE[key]
    points = [(r["date"], _get(r, path), _get(r, error) if error else None) for r in rows if r["date"]]
    points = [(d, v, e) for d, v, e in points if v is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    errors = [e or 0.0 for _, _, e in points]
    ax.errorbar([d for d, _, _ in points], [v for _, v, _ in points], yerr=errors if any(errors) else None,
                marker="o", capsize=3, label=title)  # fmt: skip
    ax.set_ylabel(unit or "value")
    ax.set_xlabel("night of the partition")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _encode(fig, plt)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _encode(fig, plt) -> str:
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_png(dag_id: str, rows: list[dict[str, Any]], panel: tuple[str, ...]) -> str | None:
    """One panel of the trend as a base64 PNG: each figure against the run's logical date; runs that
    failed the quality gate drawn as red crosses."""
    points = [(r["date"], r) for r in rows if r["date"] is not None]
    if not any(r["figures"].get(k) is not None for _, r in points for k in panel):
        return None
    plt = _pyplot()
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
    ax.set_xlabel("logical date of the run")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _encode(fig, plt)
