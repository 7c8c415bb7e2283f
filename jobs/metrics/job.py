"""Collect one run's metrics into a report (one HTML page + summary.json) and, when configured, push
them to a Prometheus Pushgateway.

    python -m jobs.metrics --run-dir DIR [--dag-id D] [--run-id R] [--stage-times JSON|FILE]
                           [--pushgateway URL] [--output DIR/report]

This module is the command line and the order of the steps; what is read is in summary.py, the plots
in plots.py, the page in report.py (templates/report.html.j2), the push in pushgateway.py. Metric
names: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from jobs.core import cli
from jobs.core.commit import atomic_output_dir, check_contained, claim_output
from jobs.core.storage import filesystem, write_json
from jobs.core.store_probe import check_input_dir
from jobs.metrics.eventlog import read_applications
from jobs.metrics.plots import stage_plots
from jobs.metrics.pushgateway import check_gateway_url, push
from jobs.metrics.report import render_html
from jobs.metrics.summary import build_summary, find_stage_outputs, load_stage_times

log = logging.getLogger("jobs.metrics")


def cumulative_of(run_dir: str) -> str | None:
    """The DAG's result over every partition so far, beside its runs (`<root>/<dag id>/cumulative`),
    when there is one."""
    where = f"{run_dir.rstrip('/').rsplit('/', 1)[0]}/cumulative"
    fs, path = filesystem(f"{where}/_SUCCESS")
    return where if fs.exists(path) else None


def collect(
    run_dir: str,
    output: str | None = None,
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
    stage_times: str | None = None,
    pushgateway: str | None = None,
) -> dict[str, Any]:
    """Write report.html, the plots and summary.json into `output` (atomically); push if asked. The
    push comes before the commit: a gateway that cannot be reached (an InfrastructureError, retried)
    leaves no report with _SUCCESS behind, so the retry redoes both."""
    t0 = time.perf_counter()
    times = load_stage_times(stage_times)
    dag_id = dag_id or times.get("dag_id") or "unknown"
    run_id = run_id or times.get("run_id") or run_dir.rstrip("/").rsplit("/", 1)[-1]
    output = output or f"{run_dir.rstrip('/')}/report"
    check_input_dir(run_dir, "--run-dir")  # first: a file as --run-dir is not an --output problem
    check_contained(output, run_dir, "--output", "--run-dir")
    outputs = find_stage_outputs(run_dir)
    claim_output(output, [f"{run_dir.rstrip('/')}/{key}" for key in outputs if key != "."])
    log_errors: list[dict[str, str]] = []
    apps = read_applications(run_dir.rstrip("/"), errors=log_errors)
    for err in log_errors:
        log.warning("skipped event log %s: %s", err["log"], err["problem"])
    summary = build_summary(run_dir, dag_id, run_id, times, outputs, apps)
    summary["spark"]["unreadable_event_logs"] = log_errors
    summary["cumulative"] = cumulative_of(run_dir)
    with atomic_output_dir(output) as staging:
        plots = stage_plots(outputs, summary, staging)
        summary["plots"] = plots
        summary["collect_seconds"] = time.perf_counter() - t0
        with open(os.path.join(staging, "report.html"), "w") as f:
            f.write(render_html(summary, plots, staging))
        write_json(os.path.join(staging, "summary.json"), summary)
        if pushgateway:
            push(summary, pushgateway)
    log.info(
        "report: %s/report.html (%d stages, %d Spark applications, %d plots)",
        output,
        len(summary["stages"]),
        len(apps),
        len(plots),
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        "metrics",
        __doc__.split("\n\n")[0],
        "python -m jobs.metrics --run-dir out/runs/cms_dimuon/RUN --pushgateway http://localhost:9091",
    )
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
    if args.pushgateway:
        check_gateway_url(args.pushgateway)
    collect(
        args.run_dir,
        args.output,
        dag_id=args.dag_id,
        run_id=args.run_id,
        stage_times=args.stage_times,
        pushgateway=args.pushgateway,
    )
    return 0
