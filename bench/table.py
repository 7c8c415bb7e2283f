"""One screen of benchmark results: the key figures of every out/bench/<name>.json and each target,
met or missed by how much.

    python -m bench.table [--results-dir out/bench]
"""

from __future__ import annotations

import argparse
import json
import os

from bench.common import RESULTS_DIR_ENV

ORDER = ("dimuon", "ingest", "prepare", "train", "cluster", "partitions")
# (benchmark, key, label, unit): the figures shown, in order; a missing key is left out
FIGURES: dict[str, list[tuple[str, str, str]]] = {
    "dimuon": [
        ("events_per_s_per_core", "colliderflow, marginal", "ev/s/core"),
        ("spark_engine_events_per_s_per_core", "colliderflow on Spark, marginal", "ev/s/core"),
        ("rdataframe_events_per_s_per_core", "RDataFrame all threads, marginal", "ev/s/core"),
        ("rdataframe_1_thread_events_per_s_per_core", "RDataFrame 1 thread, marginal", "ev/s/core"),
        ("spark_parquet_events_per_s_per_core", "Spark DataFrame on Parquet, marginal", "ev/s/core"),
        ("read_floor_events_per_s_per_core", "uproot read floor, marginal", "ev/s/core"),
        ("wall_seconds", "colliderflow wall, large input", "s"),
        ("spark_engine_wall_seconds", "colliderflow on Spark wall, large input", "s"),
        ("rdataframe_wall_seconds", "RDataFrame wall (best), large input", "s"),
        ("startup_seconds", "colliderflow start-up", "s"),
        ("histogram_max_bin_difference", "largest bin difference vs colliderflow", "events"),
    ],
    "ingest": [
        ("wall_events_per_s_per_core", "wall clock, JVM start incl.", "ev/s/core"),
        ("task_events_per_s_per_core", "task CPU time", "ev/s/core"),
        ("oracle_events_per_s", "per-event oracle", "ev/s"),
        ("bytes_written_per_event", "written", "B/event"),
    ],
    "prepare": [
        ("prepare_events_per_s_per_core", "prepare", "ev/s/core"),
        ("prepare_ratio_vs_baseline", "prepare vs single process", "x"),
        ("tfrecords_events_per_s_per_core", "tfrecords", "ev/s/core"),
        ("tfrecords_ratio_vs_baseline", "tfrecords vs single process", "x"),
    ],
    "train": [
        ("bucketed_events_per_s_per_core", "bucketed", "ev/s/core"),
        ("unbucketed_events_per_s_per_core", "unbucketed", "ev/s/core"),
    ],
    "cluster": [],
    "partitions": [
        ("night_cost_growth_larger_over_smaller_input", "a night's cost, larger input / smaller", "x"),
        ("full_run_growth_larger_over_smaller_input", "a full run's cost, larger / smaller", "x"),
        ("cumulative_rebuild_100_partitions_seconds", "cumulative rebuild, 100 partitions", "s"),
    ],
}


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        if abs(value) >= 1e6:
            return f"{value / 1e6:.2f} M"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def target_line(name: str, t: dict) -> str:
    if t.get("value") is None:
        return f"  [ n/a ] {t['what']}: not measured"
    verdict = "met" if t["met"] else "MISSED"
    ratio = t.get("ratio")
    how = f"{ratio:.2f}x the goal" if ratio is not None else ""
    return f"  [{verdict:^6s}] {t['what']}: {fmt(t['value'])} vs {fmt(t['goal'])} ({how})"


def extra_lines(name: str, r: dict) -> list[str]:
    """Nested figures that do not fit one key: bytes per layout, AUCs, cluster overheads, memory."""
    lines = []
    for layout, b in (r.get("bytes_per_event") or {}).items():
        lines.append(f"  bytes/event, {layout} layout: " + ", ".join(f"{k} {fmt(v)}" for k, v in b.items()))
    for layout, d in (r.get("layouts") or {}).items():
        lines.append(f"  {layout} layout: " + ", ".join(f"{k} {fmt(v)}" for k, v in d.items()))
    for key in ("unbucketed_auc", "bucketed_auc"):
        if r.get(key):
            lines.append(
                f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {fmt(v)}" for k, v in r[key].items())
            )
    for stage, c in (r.get("stages") or {}).items():
        lines.append(
            f"  {stage}: local[2] {fmt(c.get('local_events_per_s_per_core'))} ev/s/core, cluster+S3 "
            f"{fmt(c.get('cluster_events_per_s_per_core'))} (overhead {fmt(c.get('overhead_ratio'))}x), "
            f"{fmt(c.get('s3_bytes_written_per_event'))} B/event on S3"
        )
    if r.get("status"):
        lines.append(f"  status: {r['status']}")
    peak = r.get("peak_rss_mb")
    if peak:
        parts = []
        for size in ("small", "large"):
            p = peak.get(size) or {}
            parts.append(f"{size}: " + " ".join(f"{k} {fmt(v)}" for k, v in p.items() if k != "train_events"))
        lines.append("  peak RSS MB, " + "; ".join(parts))
    growth = r.get("memory_growth")
    if growth:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in growth["large_over_small"].items())
        verdict = "streams" if growth["streams"] else f"GROWS (> {growth['tolerance']}x)"
        lines.append(f"  memory large/small input: {ratios}: {verdict}")
    return lines


def render(results_dir: str) -> str:
    out = []
    for name in ORDER:
        path = os.path.join(results_dir, f"{name}.json")
        if not os.path.exists(path):
            out.append(f"{name}: no results ({path} missing)")
            continue
        with open(path) as f:
            r = json.load(f)
        load = r.get("machine", {}).get("load_average_1m")
        out.append(f"{name} ({r.get('recorded_at', '?')}, load {fmt(load)})")
        for key, label, unit in FIGURES[name]:
            if key in r:
                out.append(f"  {label:42s} {fmt(r[key]):>10s} {unit}")
        out.extend(extra_lines(name, r))
        out.extend(target_line(name, t) for t in (r.get("targets") or {}).values())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=os.environ.get(RESULTS_DIR_ENV, "out/bench"))
    args = parser.parse_args(argv)
    print(render(args.results_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
