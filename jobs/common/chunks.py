"""Chunk-level results that carry their own I/O statistics and bad-file reports, so that one
unreadable file can be skipped (or reported) without losing the work done on the others."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from jobs.common.errors import BadInputError
from jobs.common.rootio import Chunk
from jobs.common.storage import IOStats, merge_io

V = TypeVar("V")


@dataclass
class Partial(Generic[V]):
    """Per-file partial values (merged only at the end, so a file that fails in one chunk can be
    dropped whole), per-file I/O statistics, bad files with their problem, and task seconds."""

    values: dict[str, V] = field(default_factory=dict)
    io: dict[str, IOStats] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    task_seconds: float = 0.0


def run_chunk(chunk: Chunk, compute: Callable[[Chunk, IOStats], V]) -> Partial[V]:
    """Run `compute` on one chunk inside a Spark task; a BadInputError becomes a report, not a crash."""
    stats = IOStats(chunk.url)
    t0 = time.perf_counter()
    try:
        value = compute(chunk, stats)
    except BadInputError as exc:
        return Partial(
            io={chunk.url: stats}, bad={chunk.url: exc.problem}, task_seconds=time.perf_counter() - t0
        )
    return Partial(values={chunk.url: value}, io={chunk.url: stats}, task_seconds=time.perf_counter() - t0)


def merge_partials(a: Partial[V], b: Partial[V], merge_value: Callable[[V, V], V]) -> Partial[V]:
    """Associative and commutative as long as `merge_value` is."""
    values = dict(a.values)
    for url, v in b.values.items():
        values[url] = merge_value(values[url], v) if url in values else v
    return Partial(values, merge_io(a.io, b.io), {**a.bad, **b.bad}, a.task_seconds + b.task_seconds)


def merger(merge_value: Callable[[V, V], V]) -> Callable[[Partial[V], Partial[V]], Partial[V]]:
    return functools.partial(merge_partials, merge_value=merge_value)


def fold_good(partial: Partial[V], merge_value: Callable[[V, V], V]) -> V | None:
    """Merge the values of every file that had no bad chunk, in sorted URL order."""
    good = [partial.values[u] for u in sorted(partial.values) if u not in partial.bad]
    return functools.reduce(merge_value, good) if good else None
