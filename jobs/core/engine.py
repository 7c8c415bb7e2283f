"""Where a stage's map/reduce runs. On a cluster, Spark. On one machine a map/reduce stage may instead
run its tasks in a pool of worker processes: the same tasks and the same merge without a JVM, so a
local run starts in a fraction of a second instead of Spark's several seconds (docs/benchmarks.md).

`auto` picks the process pool for a local master (local, local[N], local[*]), Spark otherwise. Asked
for an event log (`--event-log-dir`, which the DAGs pass), the process pool writes its tasks' metrics
there in Spark's event-log form (jobs.core.task_events), so jobs.metrics reports either engine.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from jobs.core.cli import ENGINES
from jobs.core.errors import UsageError
from jobs.core.spark import LOCAL_MASTER, builder_master, map_reduce, spark_info, spark_session
from jobs.core.storage import is_local
from jobs.core.task_events import Measured, TaskRecord, write_event_log

T = TypeVar("T")
C = TypeVar("C")


def local_cores(master: str | None) -> int | None:
    """The cores of a local master (local = 1, local[N] = N, local[*] = this machine's); None for a
    cluster master."""
    m = LOCAL_MASTER.fullmatch(builder_master(master).strip())
    if not m:
        return None
    if m.group(1) is None:
        return 1
    return len(os.sched_getaffinity(0)) if m.group(1) == "*" else int(m.group(1))


def choose_engine(engine: str, master: str | None, event_log_dir: str | None) -> str:
    """`spark` or `processes` for the requested engine; a cluster master needs Spark."""
    if engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    cores = local_cores(master)
    if engine == "processes" and cores is None:
        raise UsageError(f"--engine processes runs on this machine only; --master {master} needs Spark")
    if engine == "auto":
        return "processes" if cores is not None else "spark"
    return engine


def process_map_reduce(
    items: Sequence[T],
    fn: Callable[[T], C],
    merge: Callable[[C, C], C],
    workers: int,
    urls: Iterable[str] = (),
) -> C:
    """`fn` over `items` in `workers` processes, folded with `merge` in item order (so the result does
    not depend on which worker finished first). `fn` must be picklable (a module-level function or a
    functools.partial of one)."""
    return measured_map_reduce(items, fn, merge, workers, urls)[0]


def measured_map_reduce(
    items: Sequence[T],
    fn: Callable[[T], C],
    merge: Callable[[C, C], C],
    workers: int,
    urls: Iterable[str] = (),
) -> tuple[C, list[TaskRecord]]:
    """process_map_reduce, with each task's metrics. Workers fork from this process when every input
    is a local file (no re-import); with a store's client threads in this process they start from a
    fresh server process."""
    if not items:
        raise ValueError("nothing to process")
    workers = max(1, min(workers, len(items)))
    task = Measured(fn)
    if workers == 1:
        done = list(map(task, enumerate(items)))
    else:
        method = "fork" if all(is_local(u) for u in urls) else "forkserver"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            done = list(pool.map(task, enumerate(items)))
    return functools.reduce(merge, (result for result, _ in done)), [record for _, record in done]


def run_map_reduce(
    engine: str,
    app_name: str,
    items: Sequence[T],
    fn: Callable[[T], C],
    merge: Callable[[C, C], C],
    *,
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    partitions: int | None = None,
    urls: Iterable[str] = (),
) -> tuple[C, dict[str, Any]]:
    """(the folded result, what ran it for the job's metrics). A given Spark session is used as it is."""
    if spark is None and choose_engine(engine, master, event_log_dir) == "processes":
        workers = local_cores(master) or 1
        start = int(time.time() * 1e3)
        result, records = measured_map_reduce(items, fn, merge, workers, urls)
        info = {"engine": "processes", "master": builder_master(master), "workers": workers}
        if event_log_dir:  # the tasks' metrics for jobs.metrics, as Spark's would be
            app_id = write_event_log(event_log_dir, app_name, start, int(time.time() * 1e3), records)
            info.update(app_id=app_id, event_log_dir=event_log_dir)
        return result, info
    own = spark is None
    if own:
        spark = spark_session(app_name, master, event_log_dir, spark_conf)
    try:
        result = map_reduce(spark, items, fn, merge, partitions)
        return result, {"engine": "spark", **spark_info(spark)}
    finally:
        if own:
            spark.stop()
