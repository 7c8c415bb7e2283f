"""Spark sessions for the stages and the pattern they share: a driver-side plan of (file, entry range)
chunks, one task per chunk computing array-at-a-time, partial results merged associatively."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C")


def default_master() -> str:
    return os.environ.get("COLLIDERFLOW_SPARK_MASTER", "local[*]")


def event_log_url(event_log_dir: str) -> str:
    """Spark's spelling of an event-log directory that must exist before the context starts: a local
    path (created, made absolute) or an object-store URL (a marker object makes the prefix a
    directory for Hadoop; s3:// becomes Hadoop's s3a://)."""
    if "://" not in event_log_dir or event_log_dir.startswith("file://"):
        path = event_log_dir.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        return os.path.abspath(path)
    from jobs.core.storage import filesystem

    fs, path = filesystem(event_log_dir)
    fs.pipe(f"{path.rstrip('/')}/.keep", b"")
    return "s3a://" + event_log_dir[len("s3://") :] if event_log_dir.startswith("s3://") else event_log_dir


def spark_session(
    app_name: str,
    master: str | None = None,
    event_log_dir: str | None = None,
    conf: dict[str, str] | None = None,
):
    """A SparkSession whose Python workers use this interpreter (so the project's venv), with the UI off
    unless asked for and, when `event_log_dir` is given, an event log that jobs.metrics reads back."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or default_master())
        .config("spark.ui.enabled", os.environ.get("COLLIDERFLOW_SPARK_UI", "false"))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("COLLIDERFLOW_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")  # progress bars garble task logs
        .config("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
    )
    if event_log_dir:
        builder = builder.config("spark.eventLog.enabled", "true").config(
            "spark.eventLog.dir", event_log_url(event_log_dir)
        )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("COLLIDERFLOW_SPARK_LOG_LEVEL", "WARN"))
    return spark


def map_reduce(
    spark,
    items: Sequence[T],
    fn: Callable[[T], C],
    merge: Callable[[C, C], C],
    num_partitions: int | None = None,
) -> C:
    """Apply `fn` to every item in Spark tasks and fold the results with the associative `merge`.
    One partition per item by default, so each chunk is one task."""
    if not items:
        raise ValueError("nothing to process")
    n = num_partitions or len(items)
    rdd = spark.sparkContext.parallelize(list(items), n)
    return rdd.map(fn).treeReduce(merge)


def spark_info(spark) -> dict[str, Any]:
    sc = spark.sparkContext
    return {
        "master": sc.master,
        "app_id": sc.applicationId,
        "default_parallelism": sc.defaultParallelism,
        "event_log_dir": sc.getConf().get("spark.eventLog.dir", None),
    }
