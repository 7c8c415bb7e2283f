"""The choice between Spark and the local process pool, the pool's ordered fold, the shuffle that puts
rows where Spark's does, and a worker's crash named by its task."""

from __future__ import annotations

import functools
import operator
import os
import signal

import numpy as np
import pyarrow as pa
import pytest

from jobs.core.engine import (
    ProcessExecutor,
    SparkExecutor,
    choose_engine,
    local_cores,
    spark_hash_partition,
)
from jobs.core.errors import InfrastructureError, UsageError
from jobs.core.rootio import Chunk


@pytest.mark.parametrize(
    ("master", "cores"),
    [("local", 1), ("local[3]", 3), ("local[2, 4]", 2), ("local[*]", len(os.sched_getaffinity(0))),
     ("spark://127.0.0.1:7077", None), ("k8s://https://k:443", None)],
)  # fmt: skip
def test_local_cores(master, cores):
    assert local_cores(master) == cores


def test_auto_picks_processes_for_a_local_master_spark_for_a_cluster():
    assert choose_engine("auto", "local[2]", None) == "processes"
    assert choose_engine("auto", "local[2]", "/tmp/events") == "processes"  # it logs its tasks itself
    assert choose_engine("auto", "spark://127.0.0.1:7077", None) == "spark"
    with pytest.raises(UsageError, match="--engine processes runs on this machine only"):
        choose_engine("processes", "spark://127.0.0.1:7077", None)


def _pid_and_square(x: int) -> tuple[list[int], set[int]]:
    return [x * x], {os.getpid()}


def _concat(a, b):
    return a[0] + b[0], a[1] | b[1]


def test_pool_folds_in_item_order_in_worker_processes():
    squares, pids = ProcessExecutor(2).map_reduce(list(range(40)), _pid_and_square, _concat)
    assert squares == [x * x for x in range(40)]
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert ProcessExecutor(4).map_reduce([3], functools.partial(operator.mul, 2), operator.add) == 6


def test_spark_hash_partition_is_sparks(spark):
    """The process shuffle puts every key in the partition Spark's repartition(n, key) does."""
    from pyspark.sql.functions import spark_partition_id

    rng = np.random.default_rng(5)
    keys = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 4000, dtype=np.int64),
                           [0, -1, 1, 2**63 - 1, -(2**63)]])  # fmt: skip
    for parts in (1, 3, 7):
        frame = spark.createDataFrame([(int(k),) for k in keys], "key long").repartition(parts, "key")
        got = {r["key"]: r["p"] for r in frame.select("key", spark_partition_id().alias("p")).collect()}
        assert [got[int(k)] for k in keys] == spark_hash_partition(keys, parts).tolist()


def _batches(n: int):
    """Two Arrow batches of n keyed rows each (the map side of a shuffle)."""
    keys = np.random.default_rng(n).integers(-(2**40), 2**40, 2 * n)
    for half in (keys[:n], keys[n:]):
        yield pa.RecordBatch.from_arrays([pa.array(half), pa.array(half % 7)], ["key", "value"])


def _partition_keys(part: int, batches) -> tuple[int, list[int], list[int]]:
    rows = [b for b in batches]
    return part, [k for b in rows for k in b.column("key").to_pylist()], [b.num_rows for b in rows]


@pytest.mark.parametrize("engine", ["processes", "spark"])
def test_sorted_shuffle_partitions_and_orders_as_spark(engine, spark):
    items = [5, 40, 300]
    if engine == "spark":
        executor = SparkExecutor(spark)
    else:
        executor = ProcessExecutor(2)
    out = executor.sorted_shuffle(items, _batches, "key long, value long", "key", 4, _partition_keys, 64)
    keys = np.concatenate([b.column("key").to_numpy() for n in items for b in _batches(n)])
    expect = spark_hash_partition(keys, 4)
    assert [p for p, _, _ in out] == sorted(set(expect.tolist()))
    for part, got, sizes in out:
        assert got == sorted(keys[expect == part].tolist())
        assert max(sizes) <= 64


def _crash_on_second(chunk: Chunk) -> int:
    if chunk.start:
        os.kill(os.getpid(), signal.SIGSEGV)
    return chunk.entries


def test_a_worker_that_dies_fails_the_stage_naming_its_chunk():
    chunks = [Chunk("/data/a.root", "Events", 0, 100), Chunk("/data/a.root", "Events", 100, 250)]
    with pytest.raises(InfrastructureError) as caught:
        ProcessExecutor(2).map_reduce(chunks, _crash_on_second, operator.add)
    assert "/data/a.root entries 100-250" in str(caught.value)
    assert "nothing was committed" in str(caught.value)
