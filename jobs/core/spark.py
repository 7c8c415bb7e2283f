"""Spark sessions for the stages and the pattern they share: a driver-side plan of (file, entry range)
chunks, one task per chunk computing array-at-a-time, partial results merged associatively."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from jobs.core.errors import BadInputError, UsageError
from jobs.core.storage import is_local
from jobs.core.store_probe import probe_store

T = TypeVar("T")
C = TypeVar("C")


def default_master() -> str:
    return os.environ.get("COLLIDERFLOW_SPARK_MASTER", "local[*]")


# Environment a task needs to reach the storage layer (fsspec reads these itself). Kubernetes gives
# them to every executor pod from the chart's Secret and ConfigMap; a standalone cluster's executors
# get them from the driver (spark.executorEnv.*, which Spark redacts in its UI and event log).
STORAGE_ENV_PREFIXES = ("AWS_", "COLLIDERFLOW_S3_", "COLLIDERFLOW_OCI_", "OCI_", "OCIFS_", "XRD_")


def storage_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES) and v}


def builder_master(master: str | None) -> str:
    return master or default_master()


# The masters Spark accepts (SparkContext.createTaskScheduler): local, local[N], local[*], local[N,F],
# local-cluster[N,C,M], spark://HOST:PORT[,HOST:PORT...], k8s://..., yarn.
LOCAL_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:\s*,\s*(\d+))?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")
MASTER_FORMS = "local[N], local[*], spark://HOST:PORT, k8s://https://HOST:PORT or yarn"
MASTER_PROBE_TIMEOUT_S = 4.0


def check_master(master: str | None) -> str:
    """The master a stage's Spark session gets (`master`, else $COLLIDERFLOW_SPARK_MASTER, else
    local[*]), refused in one line naming where it came from when Spark could not use it here. Found
    before any work and before a JVM starts: Spark itself reports a bad master as a Java stack trace,
    and a standalone master that does not answer only after a minute of retries."""
    value = builder_master(master).strip()
    from_env = not master and bool(os.environ.get("COLLIDERFLOW_SPARK_MASTER"))
    problem = _master_problem(value)
    if problem:
        raise UsageError(f"{'$COLLIDERFLOW_SPARK_MASTER' if from_env else '--master'} {value}: {problem}")
    return value


def _master_problem(value: str) -> str | None:
    """Why Spark cannot use the master `value` here (None: it can, as far as one can tell early)."""
    local = LOCAL_MASTER.fullmatch(value)
    if local:
        counts = [int(n) for n in local.groups() if n not in (None, "*")]
        return "needs at least 1 core (local[N], N >= 1)" if min(counts, default=1) < 1 else None
    if value.startswith("local-cluster"):
        cluster = _LOCAL_CLUSTER.fullmatch(value)
        if cluster and min(int(n) for n in cluster.groups()) >= 1:
            return None
        return "expected local-cluster[WORKERS,CORES,MEMORY_MB], each >= 1"
    if value.startswith("spark://"):
        return _standalone_problem(value.removeprefix("spark://"))
    if value.startswith("k8s://"):  # the API server is the driver pod's to reach (in-cluster)
        return None if value.removeprefix("k8s://").strip("/") else "expected k8s://https://HOST:PORT"
    if value == "yarn":
        if os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR"):
            return None
        return "no YARN cluster is configured here (set HADOOP_CONF_DIR or YARN_CONF_DIR)"
    return f"not a Spark master; use {MASTER_FORMS}"


def _standalone_problem(hosts: str) -> str | None:
    """A standalone master (several, comma-separated, for high availability) that does not accept a
    TCP connection within MASTER_PROBE_TIMEOUT_S: None as soon as one does."""
    seen = []
    for item in hosts.split(","):
        try:
            parts = urllib.parse.urlsplit(f"spark://{item.strip()}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or not port:
            return f"expected spark://HOST:PORT, got a master without {'a port' if host else 'a host'}"
        try:
            socket.create_connection((host, port), timeout=MASTER_PROBE_TIMEOUT_S).close()
            return None
        except OSError as exc:
            seen.append(f"{host}:{port} ({exc.strerror or type(exc).__name__})")
    return f"no Spark master answers at {', '.join(seen)}"


def check_event_log_dir(url: str | None) -> None:
    """Refuse, before any work, an --event-log-dir that cannot become a directory: an existing file,
    a file among its parents, an unknown protocol or a store that does not answer."""
    if not url:
        return
    source = f"--event-log-dir {url}"
    if not is_local(url):
        probe_store(url, source=source)
        return
    path = os.path.abspath(url.removeprefix("file://"))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == path else f"{existing} "
        raise BadInputError(source, f"{where}is a file, not a directory")


def event_log_url(event_log_dir: str) -> str:
    """A local directory for Spark's event log (created, made absolute). An object-store URL gets a
    private local directory, copied there through fsspec when the session stops (`spark_session`),
    so Spark never needs a Hadoop connector for s3://, oci:// or root://."""
    if is_local(event_log_dir):
        path = event_log_dir.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        return os.path.abspath(path)
    return tempfile.mkdtemp(prefix="colliderflow-spark-events-")


def _upload_event_logs(local: str, url: str) -> None:
    """Copy the finished event logs (rolling directories included) to `url`, then drop the local copy."""
    from jobs.core.storage import filesystem

    try:
        fs, path = filesystem(url)
        for name in sorted(os.listdir(local)):
            if name.endswith(".inprogress"):
                continue  # the driver died before stopping Spark: not a finished application
            src = os.path.join(local, name)
            fs.put(src, f"{path.rstrip('/')}/{name}", recursive=os.path.isdir(src))
    except Exception as exc:  # the stage's outputs are committed; a lost event log costs only metrics
        print(
            f"warning: Spark event log not copied to {url}: {str(exc).splitlines()[0][:300]}", file=sys.stderr
        )
    finally:
        shutil.rmtree(local, ignore_errors=True)


DRIVER_MEMORY_ENV = "COLLIDERFLOW_SPARK_DRIVER_MEMORY"
_JVM_SIZE = re.compile(r"[1-9][0-9]{0,6}[kmgtKMGT]?")


def driver_memory() -> str:
    """The Spark driver's heap from the environment (default 4g), checked before a JVM starts: a bad
    value made the JVM exit at once, reported only as JAVA_GATEWAY_EXITED."""
    value = os.environ.get(DRIVER_MEMORY_ENV, "4g").strip()
    if not _JVM_SIZE.fullmatch(value):
        raise UsageError(f"{DRIVER_MEMORY_ENV}={value[:40]!r}: expected a JVM size such as 2g or 512m")
    return value


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
        .master(check_master(master))
        .config("spark.ui.enabled", os.environ.get("COLLIDERFLOW_SPARK_UI", "false"))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", driver_memory())
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")  # progress bars garble task logs
        .config("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
    )
    local_log = event_log_url(event_log_dir) if event_log_dir else None
    if local_log:
        builder = builder.config("spark.eventLog.enabled", "true").config("spark.eventLog.dir", local_log)
    if not builder_master(master).startswith("local"):
        for key, value in storage_env().items():
            builder = builder.config(f"spark.executorEnv.{key}", value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("COLLIDERFLOW_SPARK_LOG_LEVEL", "WARN"))
    if event_log_dir and not is_local(event_log_dir):
        spark.stop = functools.partial(_stop_and_upload, spark.stop, local_log, event_log_dir)
    return spark


def _stop_and_upload(stop: Callable[[], None], local: str, url: str) -> None:
    stop()  # finishes the event log
    _upload_event_logs(local, url)


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
