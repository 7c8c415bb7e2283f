"""Chunk-level results that carry their own I/O statistics and bad-file reports, so that one
unreadable file can be skipped (or reported) without losing the work done on the others."""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from jobs.core.errors import BadInputError, UsageError
from jobs.core.metering import IOStats, merge_io
from jobs.core.rootio import Chunk, open_table, split_entries

V = TypeVar("V")
log = logging.getLogger(__name__)


@dataclass
class FilePlan:
    """The driver's plan: entry-range chunks per readable file, the bad files with their problem, and
    the I/O the planning itself did (metadata reads), per file."""

    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    io: dict[str, IOStats] = field(default_factory=dict)


# the most tasks one plan may hold: far above a real job's (a file of 10^8 events at the default chunk
# sizes is a few hundred), far below a typo's (--chunk-entries 1)
MAX_TASKS = 20_000
PLAN_THREADS = 16  # files opened at once while planning (each open is a few round trips to the store)


def plan_files(
    urls: Sequence[str],
    tree_name: Callable[[str, IOStats], str],
    check: Callable[[str, object], None],
    chunk_entries: int,
    on_bad_file: str,
    threads: int = PLAN_THREADS,
) -> FilePlan:
    """Open every file on the driver (metadata only), choose its event table (TTree or RNTuple), let
    `check(url, table)` validate it (raising BadInputError), and split it into entry ranges of at most
    `chunk_entries`. A bad file raises, or with on_bad_file="skip" is recorded and left out.

    The opening (`tree_name` and the table's metadata: latency-bound on a remote store) runs in a pool
    of `threads`, at most 2 x `threads` files ahead; the checks and the plan go in `urls` order on the
    calling thread, so the result, the first error and any choice a check makes from the first good
    file do not depend on which file opened first."""
    plan = FilePlan(io={url: IOStats(url) for url in urls})

    def open_one(url: str):
        name = tree_name(url, plan.io[url])
        return name, open_table(url, name, plan.io[url])

    pending: collections.deque[tuple[str, Future]] = collections.deque()
    queue = iter(urls)
    with ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="plan") as pool:

        def refill() -> None:
            while len(pending) < 2 * max(threads, 1) and (url := next(queue, None)) is not None:
                pending.append((url, pool.submit(open_one, url)))

        refill()
        try:
            while pending:
                url, opened = pending.popleft()
                refill()
                try:
                    name, table = opened.result()
                    try:
                        check(url, table)
                        plan.chunks[url] = split_entries(url, name, table.num_entries, chunk_entries)
                    finally:
                        table.file.close()
                except BadInputError as exc:
                    if on_bad_file == "fail":
                        raise
                    warn_skipped({url: exc.problem})
                    plan.bad[url] = exc.problem
        finally:  # on an error: files opened ahead are closed, the rest never opened
            for _, opened in pending:
                if not opened.cancel() and opened.exception() is None:
                    opened.result()[1].file.close()
    check_task_count(plan, chunk_entries)
    return plan


def check_task_count(plan: FilePlan, chunk_entries: int) -> None:
    """Refuse a plan of more than MAX_TASKS tasks (`--chunk-entries 1` once planned 100,000 one-event
    tasks, each a scheduling round trip): said before any task runs, with the numbers."""
    tasks = sum(len(chunks) for chunks in plan.chunks.values())
    if tasks > MAX_TASKS:
        entries = sum(c.stop - c.start for chunks in plan.chunks.values() for c in chunks)
        raise UsageError(
            f"--chunk-entries {chunk_entries}: plans {tasks:,} tasks for {entries:,} entries (at most "
            f"{MAX_TASKS:,}); raise --chunk-entries"
        )


def warn_skipped(bad: dict[str, str]) -> None:
    """One warning line per file left out by --on-bad-file skip, naming it and why."""
    for url, problem in sorted(bad.items()):
        log.warning("skipped %s: %s (--on-bad-file skip)", url, problem)


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
