"""The _metrics.json every reading stage writes: throughput, bytes read and per-file I/O latency."""

from __future__ import annotations

import functools
from typing import Any

from jobs.core.metering import IOStats

# The figures of a stage's _metrics.json that say what it produced, where present: shown beside its
# asset events, in the run report's summary and in the nightly trends.
KEY_FIGURES = ("events", "events_written", "events_per_second", "wall_seconds", "pairs", "peaks", "auc",
               "accuracy", "epochs_run", "training_events_per_second", "written_per_class",
               "bytes_written", "partitions", "partition_count", "changed_files")  # fmt: skip


def key_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The KEY_FIGURES of a stage's _metrics.json, floats rounded for display."""
    return {k: _rounded(metrics[k]) for k in KEY_FIGURES if k in metrics}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def job_metrics(
    *,
    stage: str,
    events: int,
    wall_seconds: float,
    io: dict[str, IOStats],
    skipped: dict[str, str],
    spark: dict[str, Any] | None = None,
    task_seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    total_bytes = sum(s.bytes_read for s in io.values())
    reads = sum(s.read_calls for s in io.values())
    merged = functools.reduce(IOStats.merge, io.values(), IOStats("*"))
    return {
        "stage": stage,
        "events": int(events),
        "bytes_read": int(total_bytes),
        "read_calls": int(reads),
        "wall_seconds": wall_seconds,
        "events_per_second": events / wall_seconds if wall_seconds > 0 else None,
        "task_seconds": task_seconds,
        "io_latency_ms": merged.summary()["latency_ms"],
        "files": {url: io[url].summary() for url in sorted(io)},
        "skipped_files": [{"url": u, "problem": p} for u, p in sorted(skipped.items())],
        "spark": spark or {},
        **extra,
    }
