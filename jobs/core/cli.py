"""Command-line conventions shared by the stages: common options and one error-to-exit-code policy."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobs.core.errors import BadInputError, UsageError

__all__ = [
    "BadInputError", "UsageError", "add_bad_file_arg", "add_spark_args", "parse_kv", "run", "spark_kwargs",
]  # fmt: skip

EXIT_BAD_INPUT = 2


def add_spark_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", default=None, help="Spark master URL (default: local[*] or $COLLIDERFLOW_SPARK_MASTER)"
    )
    parser.add_argument(
        "--event-log-dir", default=None, help="write the Spark event log here (read by jobs.metrics)"
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting (repeatable)",
    )


def spark_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The run() keyword arguments of the options add_spark_args defines."""
    return {
        "master": args.master,
        "event_log_dir": args.event_log_dir,
        "spark_conf": parse_kv(args.spark_conf, "--spark-conf"),
    }


def add_bad_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-file",
        choices=["fail", "skip"],
        default="fail",
        help="fail: a bad input file stops the job; skip: leave it out and list it in the outputs",
    )


def parse_kv(pairs: Sequence[str], option: str) -> dict[str, str]:
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's main; bad input or usage ends with a one-line message naming the culprit, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font substitution notes are noise
    try:
        return main(argv) or 0
    except (BadInputError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
