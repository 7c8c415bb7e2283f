"""The choice between Spark and the local process pool, and the pool's ordered fold."""

from __future__ import annotations

import functools
import operator
import os

import pytest

from jobs.core.engine import choose_engine, local_cores, process_map_reduce
from jobs.core.errors import UsageError


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
    squares, pids = process_map_reduce(list(range(40)), _pid_and_square, _concat, workers=2)
    assert squares == [x * x for x in range(40)]
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert process_map_reduce([3], functools.partial(operator.mul, 2), operator.add, 4) == 6
