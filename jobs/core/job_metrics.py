"""The _metrics.json every reading stage writes: throughput, bytes read and per-file I/O latency."""

from __future__ import annotations

import functools
from typing import Any

from jobs.core.metering import IOStats


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
