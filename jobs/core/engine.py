"""Where a stage's tasks run: one driver, several executors (coffea's processor/executor split). A
stage says what a task does and how partial results merge; the executor decides where tasks run. On a
cluster, Spark. On one machine, a pool of worker processes: the same tasks and the same merge without a
JVM, so a local run starts in a fraction of a second instead of Spark's several seconds
(docs/benchmarks.md).

An executor offers two operations, each measured per task:

- `map_reduce(items, fn, merge)`: `fn` over every item, the results folded with `merge` in item order;
- `sorted_shuffle(items, produce, schema, key, parts, consume)`: `produce` turns each item into Arrow
  record batches (of Spark DDL `schema`), whose rows go to partition `pmod(murmur3(key), parts)`
  (Spark's hash partitioning, so both executors put every row in the same partition), sorted by `key`
  within each; `consume(partition, batches)` then runs once per non-empty partition. Its results come
  back in partition order.

`auto` picks the process pool for a local master (local, local[N], local[*]), Spark otherwise. Asked
for an event log (`--event-log-dir`, which the DAGs pass), the process pool writes its tasks' metrics
there in Spark's event-log form (jobs.core.task_events), so jobs.metrics reports either engine.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np

from jobs.core.cli import ENGINES, spark_kwargs
from jobs.core.errors import InfrastructureError, UsageError
from jobs.core.lifetime import die_with_parent
from jobs.core.spark import LOCAL_MASTER, builder_master, spark_info, spark_session
from jobs.core.task_events import Measured, Round, describe, new_app_id, write_event_log

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")
Produce = Callable[[Any], Iterator[Any]]  # item -> pyarrow RecordBatches
Consume = Callable[[int, Iterator[Any]], Any]  # (partition, its sorted RecordBatches) -> result


def local_cores(master: str | None) -> int | None:
    """The cores of a local master (local = 1, local[N] = N, local[*] = this machine's); None for a
    cluster master."""
    m = LOCAL_MASTER.fullmatch(builder_master(master).strip())
    if not m:
        return None
    if m.group(1) is None:
        return 1
    return len(os.sched_getaffinity(0)) if m.group(1) == "*" else int(m.group(1))


def choose_engine(engine: str, master: str | None, event_log_dir: str | None = None) -> str:
    """`spark` or `processes` for the requested engine; a cluster master needs Spark."""
    if engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    cores = local_cores(master)
    if engine == "processes" and cores is None:
        raise UsageError(f"--engine processes runs on this machine only; --master {master} needs Spark")
    if engine == "auto":
        return "processes" if cores is not None else "spark"
    return engine


def executor_kwargs(args: Any) -> dict[str, Any]:
    """A stage's run() keyword arguments of cli.add_executor_args' options: the engine checked against
    the master first (a static check), then the master and event-log directory (cli.spark_kwargs)."""
    choose_engine(args.engine, args.master, args.event_log_dir)
    return {"engine": args.engine, **spark_kwargs(args)}


# --- Spark's hash partitioning, array-at-a-time ----------------------------------------------------

_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
SPARK_HASH_SEED = 42  # the seed of Spark SQL's Murmur3Hash (repartition by column)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_h1(h1: np.ndarray, word: np.ndarray) -> np.ndarray:
    k1 = _rotl(word * _C1, 15) * _C2
    h1 = _rotl(h1 ^ k1, 13)
    return h1 * np.uint32(5) + np.uint32(0xE6546B64)


def spark_hash_partition(keys: np.ndarray, parts: int) -> np.ndarray:
    """The partition Spark's `repartition(parts, col)` gives each int64 key: pmod(Murmur3_x86_32 of
    the long, seed 42, parts)."""
    with np.errstate(over="ignore"):
        k = np.ascontiguousarray(keys, dtype="<i8").view(np.uint64)
        low, high = (k & np.uint64(0xFFFFFFFF)).astype(np.uint32), (k >> np.uint64(32)).astype(np.uint32)
        h1 = _mix_h1(_mix_h1(np.full(len(k), SPARK_HASH_SEED, np.uint32), low), high)
        h1 ^= np.uint32(8)
        h1 ^= h1 >> np.uint32(16)
        h1 *= np.uint32(0x85EBCA6B)
        h1 ^= h1 >> np.uint32(13)
        h1 *= np.uint32(0xC2B2AE35)
        h1 ^= h1 >> np.uint32(16)
    return np.mod(h1.view(np.int32).astype(np.int64), parts)


# --- executors --------------------------------------------------------------------------------------


class ProcessExecutor:
    """Tasks in `workers` processes on this machine. Workers fork from the driver while it runs no
    Python thread but its main one (they start at once, its imports already done); otherwise from a
    server process Python starts fresh (multiprocessing's forkserver): a worker forked while another
    thread held a lock (a store client's event loop, a test's server) would wait on it forever. A
    worker that dies (a crash, the kernel's OOM killer) fails the stage with one line naming the
    task's input: an infrastructure fault (exit 1, retried), nothing committed."""

    name = "processes"

    def __init__(self, workers: int, master: str | None = None):
        self.workers = max(1, workers)
        self.master = builder_master(master)
        self.rounds: list[Round] = []
        self.event_log: dict[str, str] = {}  # app_id and event_log_dir, when its tasks are logged
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def scratch(self) -> str:
        """A folder every task of this executor sees (they share this machine), removed with it: where
        one round can leave data for the next."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="colliderflow-scratch-")
        return self._scratch.name

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "master": self.master, "workers": self.workers, **self.event_log}

    def _run(self, items: Sequence[T], fn: Callable[[T], C], name: str) -> list[C]:
        """fn over items, results in item order, each task measured into this executor's rounds."""
        if not items:
            raise ValueError("nothing to process")
        with tempfile.TemporaryDirectory(prefix="colliderflow-tasks-") as running:
            task = Measured(fn, running)
            workers = min(self.workers, len(items))
            if workers == 1:
                done = [task((i, item)) for i, item in enumerate(items)]
            else:
                done = self._in_pool(task, items, workers, running)
        self.rounds.append(Round(name, [record for _, record in done]))
        return [result for result, _ in done]

    def _in_pool(self, task: Measured, items: Sequence[T], workers: int, running: str) -> list:
        try:
            context = _worker_context()
            with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent) as pool:
                return list(pool.map(task, enumerate(items)))
        except BrokenProcessPool:
            crashed = sorted(int(n) for n in os.listdir(running) if n.isdigit())
            where = "; ".join(describe(items[i]) for i in crashed[:3]) or "unknown task"
            raise InfrastructureError(
                f"a worker process died (killed by a signal or out of memory) while reading {where}; "
                "nothing was committed"
            ) from None

    def map_reduce(self, items: Sequence[T], fn: Callable[[T], C], merge: Callable[[C, C], C],
                   name: str = "tasks") -> C:  # fmt: skip
        return functools.reduce(merge, self._run(items, fn, name))

    def sorted_shuffle(self, items: Sequence[T], produce: Produce, schema: str, key: str, parts: int,
                       consume: Consume, batch_rows: int) -> list:  # fmt: skip
        if not items:
            raise ValueError("nothing to process")
        with tempfile.TemporaryDirectory(prefix="colliderflow-shuffle-") as spill:
            self._run(items, _Spill(produce, key, parts, spill), "shuffle write")
            todo = sorted(int(n) for n in os.listdir(spill))
            if not todo:
                return []
            return self._run(todo, _SortedPartition(consume, key, spill, batch_rows), "shuffle read")


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork while the driver has no other Python thread (its native pools, BLAS's, Arrow's and the
    allocator's, reset themselves in a forked child); else the forkserver, whose server (started on
    first use, one per driver process) imports what the driver has imported of this project and the
    driver's main module, so that the workers of every round start in milliseconds. Either way the
    workers die with the driver (jobs.core.lifetime, jobs.core.forkserver_guard)."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    main = getattr(sys.modules["__main__"].__spec__, "name", None)
    names = {m for m in sys.modules if m.startswith(("jobs.", "bench.")) and not m.endswith(".__main__")}
    if main and not main.endswith("__main__"):
        names.add(main)  # `python -m bench.x`: each worker runs the main module again (as __mp_main__)
    context.set_forkserver_preload(["jobs.core.forkserver_guard", *sorted(names)])
    return context


class _Spill:
    """Map side of the process shuffle: one item's batches into Arrow files, one per partition."""

    def __init__(self, produce: Produce, key: str, parts: int, spill: str):
        self.produce, self.key, self.parts, self.spill = produce, key, parts, spill

    def __call__(self, item: object) -> None:
        import pyarrow as pa

        writers: dict[int, Any] = {}
        tag = f"{os.getpid()}-{time.monotonic_ns()}"
        try:
            for batch in self.produce(item):
                part_of = spark_hash_partition(batch.column(self.key).to_numpy(), self.parts)
                order = np.argsort(part_of, kind="stable")
                bounds = np.flatnonzero(np.diff(part_of[order])) + 1
                for rows in np.split(order, bounds) if len(order) else []:
                    p = int(part_of[rows[0]])
                    if p not in writers:
                        os.makedirs(f"{self.spill}/{p}", exist_ok=True)
                        sink = pa.OSFile(f"{self.spill}/{p}/{tag}.arrow", "wb")
                        writers[p] = (sink, pa.ipc.new_file(sink, batch.schema))
                    writers[p][1].write_batch(batch.take(pa.array(rows)))
        finally:
            for sink, writer in writers.values():
                writer.close()
                sink.close()


class _SortedPartition:
    """Reduce side of the process shuffle: one partition's rows sorted by key, handed to `consume` in
    batches of `batch_rows` (as Spark's mapInArrow would)."""

    def __init__(self, consume: Consume, key: str, spill: str, batch_rows: int):
        self.consume, self.key, self.spill, self.batch_rows = consume, key, spill, batch_rows

    def __call__(self, part: int) -> Any:
        import pyarrow as pa

        folder = f"{self.spill}/{part}"
        names = sorted(os.listdir(folder))
        table = pa.concat_tables(pa.ipc.open_file(pa.memory_map(f"{folder}/{n}")).read_all() for n in names)
        order = np.argsort(table.column(self.key).to_numpy(), kind="stable")

        def batches() -> Iterator[Any]:
            for start in range(0, len(order), self.batch_rows):
                yield from table.take(pa.array(order[start : start + self.batch_rows])).to_batches()

        return self.consume(part, batches())


class SparkExecutor:
    """Tasks in Spark: one partition per item, results folded with treeReduce; the shuffle is Spark's."""

    name = "spark"
    scratch = None  # executors share no disk: each round reads what it needs itself

    def __init__(self, spark, partitions: int | None = None):
        self.spark = spark
        self.partitions = partitions

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, **spark_info(self.spark)}

    def map_reduce(self, items: Sequence[T], fn: Callable[[T], C], merge: Callable[[C, C], C],
                   name: str = "tasks") -> C:  # fmt: skip
        if not items:
            raise ValueError("nothing to process")
        rdd = self.spark.sparkContext.parallelize(list(items), self.partitions or len(items))
        return rdd.map(fn).treeReduce(merge)

    def sorted_shuffle(self, items: Sequence[T], produce: Produce, schema: str, key: str, parts: int,
                       consume: Consume, batch_rows: int) -> list:  # fmt: skip
        if not items:
            raise ValueError("nothing to process")
        sc = self.spark.sparkContext
        rows = [(pickle.dumps(item),) for item in items]
        frame = self.spark.createDataFrame(sc.parallelize(rows, len(rows)), "item binary")
        setting = "spark.sql.execution.arrow.maxRecordsPerBatch"
        saved = self.spark.conf.get(setting, None)
        self.spark.conf.set(setting, str(batch_rows))
        try:
            shuffled = (
                frame.mapInArrow(_ProduceArrow(produce), schema)
                .repartition(parts, key)
                .sortWithinPartitions(key)
            )
            out = shuffled.mapInArrow(_ConsumeArrow(consume), "result binary").collect()
        finally:
            if saved is None:
                self.spark.conf.unset(setting)
            else:
                self.spark.conf.set(setting, saved)
        results = sorted((pickle.loads(r["result"]) for r in out), key=lambda pr: pr[0])
        return [result for _, result in results]


class _ProduceArrow:
    """mapInArrow over pickled items: each item's batches."""

    def __init__(self, produce: Produce):
        self.produce = produce

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for blob in batch.column(0).to_pylist():
                yield from self.produce(pickle.loads(blob))


class _ConsumeArrow:
    """mapInArrow over one sorted partition: consume's result, pickled with the partition id."""

    def __init__(self, consume: Consume):
        self.consume = consume

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        rows = (b for b in batches if b.num_rows)
        first = next(rows, None)
        if first is None:
            return
        result = self.consume(part, _chain(first, rows))
        yield pa.RecordBatch.from_pylist([{"result": pickle.dumps((part, result))}])


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


Executor = ProcessExecutor | SparkExecutor


@contextlib.contextmanager
def open_executor(
    engine: str,
    app_name: str,
    *,
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    partitions: int | None = None,
) -> Iterator[Executor]:
    """The executor `engine` picks for this master. A given Spark session is used as it is; one this
    opens is stopped on the way out. The process executor's tasks go to `event_log_dir` (if any) as
    one application, also when the stage fails (as Spark's would)."""
    if spark is not None:
        yield SparkExecutor(spark, partitions)
        return
    if choose_engine(engine, master, event_log_dir) == "spark":
        session = spark_session(app_name, master, event_log_dir, spark_conf)
        try:
            yield SparkExecutor(session, partitions)
        finally:
            session.stop()
        return
    executor = ProcessExecutor(local_cores(master) or 1, master)
    start = int(time.time() * 1e3)
    if event_log_dir:
        executor.event_log = {"app_id": new_app_id(start), "event_log_dir": event_log_dir}
    try:
        yield executor
    finally:
        executor.close()
        if event_log_dir and executor.rounds:
            app_id, end = executor.event_log["app_id"], int(time.time() * 1e3)
            write_event_log(event_log_dir, app_name, app_id, start, end, executor.rounds)


def run_map_reduce(
    engine: str,
    app_name: str,
    items: Sequence[T],
    fn: Callable[[T], C],
    merge: Callable[[C, C], C],
    **where: Any,
) -> tuple[C, dict[str, Any]]:
    """One map/reduce on the executor `engine` picks: (the folded result, what ran it for the job's
    metrics). `where`: open_executor's keywords."""
    with open_executor(engine, app_name, **where) as executor:
        return executor.map_reduce(items, fn, merge), executor.info()
