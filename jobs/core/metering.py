"""Per-file I/O accounting (bytes, read calls, read latency as a mergeable histogram): a filesystem
wrapper that measures every request a reader makes, so that storage latency is a measured quantity."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

# Read latency is kept as counts in fixed log-spaced buckets (20 per decade from 1 us to 1000 s, plus
# under- and overflow): a file read in millions of requests costs the same few hundred integers as one
# read in ten, and histograms of chunks and files merge by addition.
LATENCY_EDGES_MS = 10.0 ** np.arange(-3.0, 6.0 + 1e-9, 0.05)


def _no_latencies() -> np.ndarray:
    return np.zeros(LATENCY_EDGES_MS.size + 1, dtype=np.int64)


def _quantile_ms(counts: np.ndarray, q: float) -> float:
    """The q-quantile of a bucketed latency histogram, interpolated log-linearly inside its bucket
    (within 6 % of the exact value for 20 buckets per decade)."""
    total = int(counts.sum())
    if not total:
        return 0.0
    rank = q * total
    cum = np.cumsum(counts)
    i = min(int(np.searchsorted(cum, rank, side="left")), counts.size - 1)
    if i == 0:
        return float(LATENCY_EDGES_MS[0])
    if i == counts.size - 1:
        return float(LATENCY_EDGES_MS[-1])
    lo, hi = LATENCY_EDGES_MS[i - 1], LATENCY_EDGES_MS[i]
    frac = (rank - (cum[i] - counts[i])) / counts[i]
    return float(lo * (hi / lo) ** frac)


@dataclass
class IOStats:
    """Reads of one file: bytes, byte ranges, requests (what the reader waits for: one range, or a
    vector of ranges fetched concurrently), how many requests were in flight at once, and a
    fixed-bucket histogram of the requests' latency with its exact total and maximum."""

    url: str
    bytes_read: int = 0
    read_calls: int = 0
    requests: int = 0
    read_seconds: float = 0.0
    max_seconds: float = 0.0
    max_concurrent: int = 0  # requests in flight at once, at the most
    latency_counts: np.ndarray = field(default_factory=_no_latencies, repr=False)

    def record(self, nbytes: int, seconds: float, ranges: int = 1) -> None:
        self.bytes_read += nbytes
        self.read_calls += ranges
        self.requests += 1
        self.read_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)
        self.latency_counts[np.searchsorted(LATENCY_EDGES_MS, seconds * 1e3, side="right")] += 1

    def merge(self, other: IOStats) -> IOStats:
        return IOStats(
            self.url,
            self.bytes_read + other.bytes_read,
            self.read_calls + other.read_calls,
            self.requests + other.requests,
            self.read_seconds + other.read_seconds,
            max(self.max_seconds, other.max_seconds),
            max(self.max_concurrent, other.max_concurrent),
            self.latency_counts + other.latency_counts,
        )

    def summary(self) -> dict[str, Any]:
        pct = {f"p{q}": _quantile_ms(self.latency_counts, q / 100) for q in (50, 90, 99)}
        return {
            "bytes_read": self.bytes_read,
            "read_calls": self.read_calls,
            "requests": self.requests,
            "max_concurrent_requests": self.max_concurrent,
            "read_seconds": self.read_seconds,
            "latency_ms": {
                **{k: min(v, self.max_seconds * 1e3) for k, v in pct.items()},
                "max": self.max_seconds * 1e3,
            },
        }


def merge_io(a: dict[str, IOStats], b: dict[str, IOStats]) -> dict[str, IOStats]:
    """Associative merge of per-file I/O statistics keyed by URL."""
    out = dict(a)
    for url, stats in b.items():
        out[url] = out[url].merge(stats) if url in out else stats
    return out


class MeteredFileSystem:
    """An fsspec filesystem seen through a meter: its range reads (cat_file, cat_ranges and their async
    forms, which uproot's fsspec source issues concurrently on fsspec's event loop) add their bytes and
    latency to an IOStats; every other attribute is the filesystem's own. The reads themselves are
    untouched, so a reader keeps its concurrency (wrapping the file object instead serialises them)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, stats: IOStats):
        self._fs = fs
        self._stats = stats
        self._lock = threading.Lock()  # local reads run in worker threads
        self._in_flight = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    @contextlib.contextmanager
    def _request(self) -> Iterator[list]:
        """Time one request and count what it returned (the caller puts the data in the list)."""
        with self._lock:
            self._in_flight += 1
            self._stats.max_concurrent = max(self._stats.max_concurrent, self._in_flight)
        t0 = time.perf_counter()
        box: list = []
        try:
            yield box
        finally:
            seconds = time.perf_counter() - t0
            parts = box[0] if box and isinstance(box[0], list) else box
            nbytes = sum(len(p) for p in parts if isinstance(p, bytes | bytearray | memoryview))
            with self._lock:
                self._in_flight -= 1
                self._stats.record(nbytes, seconds, ranges=max(len(parts), 1))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> bytes:
        with self._request() as box:
            box.append(self._fs.cat_file(path, start=start, end=end, **kw))
        return box[0]

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], **kw: Any) -> list:
        with self._request() as box:
            box.append(self._fs.cat_ranges(paths, starts, ends, **kw))
        return box[0]

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any):
        with self._request() as box:
            box.append(await self._fs._cat_file(path, start=start, end=end, **kw))
        return box[0]

    async def _cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], **kw: Any) -> list:
        with self._request() as box:
            box.append(await self._fs._cat_ranges(paths, starts, ends, **kw))
        return box[0]
