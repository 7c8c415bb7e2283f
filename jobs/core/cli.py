"""Command-line conventions shared by the stages: common options and one error-to-exit-code policy."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jobs.core.errors import BadInputError, InfrastructureError, UsageError

__all__ = [
    "BadInputError", "InfrastructureError", "UsageError", "add_bad_file_arg", "add_engine_arg",
    "add_executor_args", "add_spark_args", "check_range", "new_parser", "parse_kv", "run", "spark_kwargs",
]  # fmt: skip

EXIT_BAD_INPUT = 2
EXIT_INFRASTRUCTURE = 1  # what any uncaught exception gives too: Airflow retries it
MESSAGE_LIMIT = 500  # characters of an error line


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as one line of fewer than `limit` characters (whitespace runs collapsed, the end cut
    with an ellipsis): what a person reads in a task log, not a dump."""
    text = " ".join(str(message).split())
    return text if len(text) < limit else text[: limit - 2] + "…"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help with every option's default (unless it has none, or its text already says it) and the
    epilog's example kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def new_parser(stage: str, description: str, example: str) -> argparse.ArgumentParser:
    """The parser of `python -m jobs.<stage>`: its description, defaults in --help, one example. No
    abbreviations: `--test` must not quietly mean `--test-fraction`."""
    return argparse.ArgumentParser(
        prog=f"python -m jobs.{stage}",
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )


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


# Where a map-reduce stage's tasks run (jobs.core.engine); here so that the Airflow side, which imports
# this module at every DAG parse, offers the same choices without importing the engine.
ENGINES = ("auto", "spark", "processes")


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="where the tasks run: spark, or processes (a local run without a JVM, which writes its tasks' "
        "metrics to --event-log-dir in Spark's event-log form); auto: processes for a local master",
    )


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """Where a stage's tasks run: the Spark options and the engine."""
    add_spark_args(parser)
    add_engine_arg(parser)


def spark_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The run() keyword arguments of the options add_spark_args defines, checked before any work: a
    master Spark cannot use here, an event-log directory that cannot be one."""
    # imported here: the Airflow plugins import this module (EXIT_BAD_INPUT) at every DAG parse, and
    # jobs.core.spark brings numpy and fsspec
    from jobs.core.spark import check_event_log_dir, check_master

    check_master(args.master)
    check_event_log_dir(args.event_log_dir)
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


# Upper bound of every partition/shard count option: far above any real job's task count, well below
# what would fill a driver's memory with empty partitions (docs/errors.md).
MAX_PARTITIONS = 100_000


def check_range(value: float | None, option: str, low: float, high: float | None = None) -> None:
    """Refuse, naming the option, a number below `low` (0 partitions mean nothing) or above `high`
    (a size that would fill a disk or the memory); None (unset) passes."""
    if value is None or (low <= value and (high is None or value <= high)):
        return
    bound = f">= {low}" if high is None else f"between {low} and {high}"
    raise UsageError(f"{option} must be {bound}, got {value}")


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
    # font substitution notes, credential discovery and connection chatter are noise in a stage's log;
    # py4j's "Closing down clientserver connection" (INFO, at exit) would follow a stage's error line
    for noisy in ("matplotlib", "botocore", "aiobotocore", "s3fs", "urllib3", "fsspec", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    caller_session = _active_spark()
    with _sigterm_unwinds():
        try:
            return main(argv) or 0
        except (BadInputError, UsageError) as exc:
            return _fail(exc, EXIT_BAD_INPUT, caller_session)
        except InfrastructureError as exc:
            return _fail(exc, EXIT_INFRASTRUCTURE, caller_session)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            return _fail(InfrastructureError(disk_full(exc)), EXIT_INFRASTRUCTURE, caller_session)


# a full disk or quota: the machine's fault, not the input's (exit 1, retried once there is room)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: OSError) -> str:
    """One line for a write that found no room: where, and how much the filesystem has left."""
    where = os.fsdecode(exc.filename) if exc.filename else None
    probe = where or "."
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe or "/").free
    problem = exc.strerror or "no space left"
    return f"{where or 'a write'}: {problem} ({free / 1e6:,.1f} MB free on its filesystem)"


def run_and_exit(main: Callable[[Sequence[str] | None], int | None]) -> NoReturn:
    """`python -m jobs.<stage>`: `run`, then exit with its code. A SIGTERM while the interpreter shuts
    down (TensorFlow's teardown takes seconds) exits with that code too: the output is committed,
    and a task killed by the signal (-15) would be retried for nothing."""
    code = run(main)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
    raise SystemExit(code)


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM (Airflow stopping a task, Kubernetes evicting a pod) raises SystemExit(143) instead of
    killing the process outright, so every `finally` runs: a staging folder is removed, not left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _fail(exc: Exception, code: int, caller_session: object) -> int:
    """Print the error as the last line of stderr: after the Spark session the stage started (if any)
    has stopped, so none of its shutdown lines follows it. A session the caller already held (an
    in-process caller's) is theirs and left running."""
    session = _active_spark()
    if session is not None and session is not caller_session:
        session.stop()
    print(one_line(f"error: {exc}"), file=sys.stderr)
    return code


def _active_spark() -> object:
    if "pyspark" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()
