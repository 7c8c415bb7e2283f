"""Which partitions a run processes, as a stage of its own: what the `partition` task runs in a pod on
Kubernetes, where Airflow holds no storage credentials and so cannot list the input or read the log
(jobs.core.partitions does the work; on the local backend Airflow calls it in process). The pod cannot
ask Airflow whether another run still runs, so an unfinished partition of another run is taken over
once its claim is older than --orphan-after-hours (one processed twice still counts once).

The decision is written as JSON to --result (the pod's XCom file, /airflow/xcom/return.json):
{"manifests": [...], "keys": [...], "latest": URL or null, "notes": [...]}.

    python -m jobs.partition --input NAME=URL [...] --output-root URL --dag-id ID --run-id ID
        --night KEY [--take new|all|named] [--key KEY ...] [--scheme night|folder|hash/N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence

from jobs.core import cli
from jobs.core.errors import UsageError
from jobs.core.partitions import Source, partitions_root, plan_run

log = logging.getLogger("jobs.partition")

XCOM_FILE = "/airflow/xcom/return.json"  # where the provider's sidecar reads a pod's return value


def decide(args: argparse.Namespace) -> dict:
    """The plan of one run, as the `partition` task hands it on."""
    inputs: dict[str, list[str]] = {}
    for name, url in _pairs(args.input):
        inputs.setdefault(name, []).append(url)
    source = Source(inputs, args.output_root.rstrip("/"))
    plan = plan_run(
        partitions_root(args.output_root, args.dag_id), source, args.run_id, args.night, take=args.take,
        names=args.key, scheme=args.scheme, is_live=lambda run: True,
        orphan_after=args.orphan_after_hours * 3600,
    )  # fmt: skip
    for note in plan.notes:
        log.warning("%s", note)
    return {"manifests": plan.manifests, "keys": [p.key for p in plan.partitions], "latest": plan.latest,
            "notes": plan.notes}  # fmt: skip


def _pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    """NAME=URL items, each URL one value (spaces and all)."""
    out = []
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--input: expected NAME=URL, got {item!r}")
        out.append((name, url))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(
        "partition",
        __doc__.splitlines()[0],
        "python -m jobs.partition --input input=s3://data/2012B --output-root s3://runs --dag-id cms_dimuon "
        "--run-id scheduled__2026-03-01 --night 2026-03-01",
    )
    parser.add_argument("--input", action="append", required=True, metavar="NAME=URL",
                        help="an input of the source (repeatable; one URL each)")  # fmt: skip
    parser.add_argument("--output-root", required=True, help="the run's output root")
    parser.add_argument("--dag-id", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--night", required=True, help="the key of a new partition by night")
    parser.add_argument("--take", choices=("new", "all", "named"), default="new")
    parser.add_argument("--key", action="append", default=[], help="with --take named: a partition key")
    parser.add_argument("--scheme", default="night", help="night, folder or hash/N")
    parser.add_argument("--orphan-after-hours", type=float, default=12.0,
                        help="take over another run's unfinished partition after this long")  # fmt: skip
    parser.add_argument("--result", default=XCOM_FILE, help="where the decision goes (JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_range(args.orphan_after_hours, "--orphan-after-hours", 0, None)
    result = decide(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.result)), exist_ok=True)
    with open(args.result, "w") as f:
        json.dump(result, f)
    log.info("partition: %d partition(s) to process: %s", len(result["keys"]), ", ".join(result["keys"]))
    return 0
