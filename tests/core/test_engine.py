"""The choice between Spark and the local process pool, the pool's ordered fold, the shuffle that puts
rows where Spark's does, and a worker's crash named by its task."""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

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
from jobs.core.errors import BadInputError, InfrastructureError, UsageError
from jobs.core.rootio import Chunk
from tests.conftest import ROOT


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


HELD = threading.Lock()  # held by a driver thread in the test below
SEEN = "imported"  # what a worker sees: the driver's value when forked from it


def _seen(_: int) -> list[str]:
    return [SEEN]


def _driver(script: str) -> str:
    """Run `script` as a stage driver would run (its own process); its stdout."""
    run = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = run.communicate(timeout=120)
    finally:  # a stuck worker too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, err[-2000:]
    return out


def test_workers_fork_from_a_driver_with_one_thread_else_from_a_fresh_server():
    """The usual stage driver (local files, one thread) forks its workers: they start at once with
    its imports and state; a driver running another thread has them start from a fresh server."""
    out = _driver("""
        import operator, threading
        from jobs.core.engine import ProcessExecutor
        from tests.core import test_engine
        test_engine.SEEN = "set by the driver"
        print(ProcessExecutor(2).map_reduce([1, 2], test_engine._seen, operator.add))
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        print(ProcessExecutor(2).map_reduce([1, 2], test_engine._seen, operator.add))
    """)
    assert out.splitlines() == [str(["set by the driver"] * 2), str(["imported"] * 2)]


def _record_pid_then_wait(folder: str) -> int:
    pathlib.Path(folder, str(os.getpid())).touch()
    time.sleep(600)
    return 0


def _alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("threads", [1, 2], ids=["forked-workers", "forkserver-workers"])
def test_workers_die_with_their_driver(tmp_path, threads):
    """Issue 28: after `kill -9` of a stage's driver its workers lived on under PID 1, blocked, holding
    its stdout open. Now no worker is left 2 s later, however they were started."""
    script = textwrap.dedent(f"""
        import operator, threading
        from jobs.core.engine import ProcessExecutor
        from tests.core import test_engine
        for _ in range({threads} - 1):
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        wait = test_engine._record_pid_then_wait
        ProcessExecutor(2).map_reduce([{str(tmp_path)!r}] * 2, wait, operator.add)
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in tmp_path.iterdir()]
        assert len(workers) == 2 and all(map(_alive, workers))
        driver.kill()
        driver.wait()
        time.sleep(2)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their driver"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


def _square_under_the_lock(x: int) -> int:
    with HELD:
        return x * x


def test_workers_do_not_inherit_a_lock_a_driver_thread_holds():
    """A driver may run threads (a store client's event loop, a test's server); a worker forked from
    it while one of them holds a lock would wait on that lock forever. Such a driver's workers start
    from a fresh server process instead, so a thread holding a lock the tasks take delays nothing."""
    out = _driver("""
        import operator, threading, time
        from jobs.core.engine import ProcessExecutor
        from tests.core import test_engine
        holding = threading.Event()
        def hold():
            with test_engine.HELD:
                holding.set()
                time.sleep(600)
        threading.Thread(target=hold, daemon=True).start()
        holding.wait()
        print(ProcessExecutor(2).map_reduce(list(range(8)), test_engine._square_under_the_lock, operator.add))
    """)
    assert out.split() == [str(sum(x * x for x in range(8)))]


def _bad_first_then_slow(item: tuple[int, str]) -> int:
    index, done = item
    if index == 0:
        raise BadInputError(f"item {index}", "not a ROOT file")
    time.sleep(0.1)
    open(os.path.join(done, str(index)), "w").close()
    return 1


def test_a_bad_input_in_a_worker_ends_the_round_at_once(tmp_path):
    """A worker's BadInputError reaches the driver whole (its file and problem) and fails the stage at
    once: the tasks not yet started are dropped, not run first."""
    items = [(i, str(tmp_path)) for i in range(60)]
    with pytest.raises(BadInputError, match="item 0: not a ROOT file"):
        ProcessExecutor(2).map_reduce(items, _bad_first_then_slow, operator.add)
    assert len(os.listdir(tmp_path)) < 10


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
