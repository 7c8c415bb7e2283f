"""Spark event logs read back without Spark: the per-task metrics that sparkMeasure would collect
(executor run/CPU/GC time, bytes and records in/out, shuffle) summed per stage and per application.

Spark writes one JSON object per line. Spark 4 defaults to rolling logs (a directory
``eventlog_v2_<app id>/`` of ``events_<n>_<app id>[.zstd]`` parts) compressed with zstd; older or
reconfigured writers produce a single file ``<app id>[.zstd|.lz4|.snappy][.inprogress]``. Both are read,
local or on an object store (fsspec URLs).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.core.errors import BadInputError
from jobs.core.storage import filesystem, is_local
from jobs.core.task_events import APP_PREFIX

ROLLING_DIR = re.compile(r"^eventlog_v2_(?P<app>.+)$")
ROLLING_PART = re.compile(r"^events_(?P<n>\d+)_(?P<app>.+?)(?P<codec>\.[a-z0-9]+)?$")
CODECS = (".zstd", ".zst", ".lz4", ".snappy", ".lzf")
# Spark's application ids (local, standalone, Kubernetes, YARN) and the process executor's
LOG_PREFIXES = ("app-", "local-", "spark-", "application_", APP_PREFIX)


@dataclass
class TaskTotals:
    """Sums over tasks (times in seconds, sizes in bytes), the quantities sparkMeasure reports."""

    tasks: int = 0
    failed_tasks: int = 0
    executor_run_seconds: float = 0.0
    executor_cpu_seconds: float = 0.0
    deserialize_seconds: float = 0.0
    gc_seconds: float = 0.0
    result_serialization_seconds: float = 0.0
    input_bytes: int = 0
    input_records: int = 0
    output_bytes: int = 0
    output_records: int = 0
    shuffle_read_bytes: int = 0
    shuffle_read_records: int = 0
    shuffle_fetch_wait_seconds: float = 0.0
    shuffle_write_bytes: int = 0
    shuffle_write_records: int = 0
    shuffle_write_seconds: float = 0.0
    memory_bytes_spilled: int = 0
    disk_bytes_spilled: int = 0
    peak_execution_memory: int = 0
    task_seconds_max: float = 0.0

    def add_task(self, metrics: dict[str, Any] | None, failed: bool, duration_s: float) -> None:
        """Add one SparkListenerTaskEnd's "Task Metrics" (ms and ns converted to seconds)."""
        self.tasks += 1
        self.failed_tasks += int(failed)
        self.task_seconds_max = max(self.task_seconds_max, duration_s)
        if not metrics:
            return
        inp = metrics.get("Input Metrics") or {}
        out = metrics.get("Output Metrics") or {}
        sr = metrics.get("Shuffle Read Metrics") or {}
        sw = metrics.get("Shuffle Write Metrics") or {}
        self.executor_run_seconds += metrics.get("Executor Run Time", 0) / 1e3
        self.executor_cpu_seconds += metrics.get("Executor CPU Time", 0) / 1e9
        self.deserialize_seconds += metrics.get("Executor Deserialize Time", 0) / 1e3
        self.gc_seconds += metrics.get("JVM GC Time", 0) / 1e3
        self.result_serialization_seconds += metrics.get("Result Serialization Time", 0) / 1e3
        self.input_bytes += inp.get("Bytes Read", 0)
        self.input_records += inp.get("Records Read", 0)
        self.output_bytes += out.get("Bytes Written", 0)
        self.output_records += out.get("Records Written", 0)
        self.shuffle_read_bytes += sr.get("Remote Bytes Read", 0) + sr.get("Local Bytes Read", 0)
        self.shuffle_read_records += sr.get("Total Records Read", 0)
        self.shuffle_fetch_wait_seconds += sr.get("Fetch Wait Time", 0) / 1e3
        self.shuffle_write_bytes += sw.get("Shuffle Bytes Written", 0)
        self.shuffle_write_records += sw.get("Shuffle Records Written", 0)
        self.shuffle_write_seconds += sw.get("Shuffle Write Time", 0) / 1e9
        self.memory_bytes_spilled += metrics.get("Memory Bytes Spilled", 0)
        self.disk_bytes_spilled += metrics.get("Disk Bytes Spilled", 0)
        self.peak_execution_memory = max(self.peak_execution_memory, metrics.get("Peak Execution Memory", 0))

    def merge(self, other: TaskTotals) -> TaskTotals:
        out = TaskTotals()
        for name, value in asdict(self).items():
            other_value = getattr(other, name)
            combine = max if name in ("peak_execution_memory", "task_seconds_max") else (lambda a, b: a + b)
            setattr(out, name, combine(value, other_value))
        return out


@dataclass
class StageSummary:
    stage_id: int
    attempt: int
    name: str = ""
    num_tasks: int = 0
    submitted_ms: int | None = None
    completed_ms: int | None = None
    failure_reason: str | None = None
    totals: TaskTotals = field(default_factory=TaskTotals)

    @property
    def duration_seconds(self) -> float | None:
        if self.submitted_ms is None or self.completed_ms is None:
            return None
        return (self.completed_ms - self.submitted_ms) / 1e3

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "attempt": self.attempt,
            "name": self.name,
            "num_tasks": self.num_tasks,
            "duration_seconds": self.duration_seconds,
            "failure_reason": self.failure_reason,
            **asdict(self.totals),
        }


@dataclass
class ApplicationSummary:
    app_id: str
    app_name: str = ""
    log: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    complete: bool = False
    jobs: int = 0
    failed_jobs: int = 0
    executors: int = 0
    stages: list[StageSummary] = field(default_factory=list)

    @property
    def totals(self) -> TaskTotals:
        out = TaskTotals()
        for stage in self.stages:
            out = out.merge(stage.totals)
        return out

    @property
    def duration_seconds(self) -> float | None:
        if self.start_ms is None or self.end_ms is None:
            return None
        return (self.end_ms - self.start_ms) / 1e3

    def to_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "app_name": self.app_name,
            "log": self.log,
            "complete": self.complete,
            "duration_seconds": self.duration_seconds,
            "jobs": self.jobs,
            "failed_jobs": self.failed_jobs,
            "executors": self.executors,
            "totals": asdict(self.totals),
            "stages": [s.to_dict() for s in self.stages],
        }


def _decompress(url: str, raw: bytes) -> bytes:
    name = url.rsplit("/", 1)[-1].removesuffix(".inprogress")
    if name.endswith((".zstd", ".zst")):
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True) as r:
            try:
                return r.read()
            except zstandard.ZstdError as exc:
                raise BadInputError(url, f"corrupt zstd event log ({exc})") from None
    for codec in (".lz4", ".snappy", ".lzf"):
        if name.endswith(codec):
            raise BadInputError(
                url,
                f"{codec[1:]}-compressed event log; write logs with spark.eventLog.compression.codec=zstd",
            )
    return raw


def read_events(url: str) -> Iterator[dict[str, Any]]:
    """The events of one log file. A truncated last line (a log still being written) is skipped; a
    malformed line elsewhere is an error naming the file and line."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise BadInputError(url, "no such event log") from None
    lines = _decompress(url, raw).decode("utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                return
            raise BadInputError(url, f"line {i + 1} is not a JSON event") from None


def find_event_logs(root: str) -> list[list[str]]:
    """Event logs below `root`, one list of part files per application (rolling parts in order)."""
    fs, path = filesystem(root)
    if not fs.exists(path):
        return []
    apps: list[list[str]] = []
    for found in sorted(fs.find(path, withdirs=False)):
        parent, name = found.rstrip("/").rsplit("/", 1)
        url = found if is_local(root) else fs.unstrip_protocol(found)
        if ROLLING_DIR.match(parent.rsplit("/", 1)[-1]):
            continue  # collected per directory below
        if name.startswith(LOG_PREFIXES) and not name.endswith(".crc"):
            apps.append([url])
    for found in sorted(fs.find(path, withdirs=True, detail=False)):
        name = found.rstrip("/").rsplit("/", 1)[-1]
        if ROLLING_DIR.match(name) and fs.isdir(found):
            parts = []
            for part in fs.ls(found, detail=False):
                m = ROLLING_PART.match(part.rsplit("/", 1)[-1])
                if m:
                    parts.append((int(m.group("n")), part if is_local(root) else fs.unstrip_protocol(part)))
            if parts:
                apps.append([p for _, p in sorted(parts)])
    return apps


def summarize_application(parts: list[str]) -> ApplicationSummary:
    """Aggregate one application's task metrics per stage attempt."""
    parent = parts[0].rsplit("/", 1)[0]
    app = ApplicationSummary(
        app_id="", log=parent if ROLLING_DIR.match(parent.rsplit("/", 1)[-1]) else parts[0]
    )
    stages: dict[tuple[int, int], StageSummary] = {}
    executors: set[str] = set()

    def stage(sid: int, attempt: int) -> StageSummary:
        return stages.setdefault((sid, attempt), StageSummary(sid, attempt))

    for url in parts:
        for ev in read_events(url):
            kind = ev.get("Event")
            if kind == "SparkListenerTaskEnd":
                info = ev.get("Task Info", {})
                failed = bool(info.get("Failed")) or ev.get("Task End Reason", {}).get("Reason") != "Success"
                duration = max(0, info.get("Finish Time", 0) - info.get("Launch Time", 0)) / 1e3
                stage(ev["Stage ID"], ev.get("Stage Attempt ID", 0)).totals.add_task(
                    ev.get("Task Metrics"), failed, duration
                )
                executors.add(str(info.get("Executor ID")))
            elif kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
                si = ev["Stage Info"]
                s = stage(si["Stage ID"], si.get("Stage Attempt ID", 0))
                s.name = si.get("Stage Name", s.name)
                s.num_tasks = si.get("Number of Tasks", s.num_tasks)
                s.submitted_ms = si.get("Submission Time", s.submitted_ms)
                s.completed_ms = si.get("Completion Time", s.completed_ms)
                s.failure_reason = si.get("Failure Reason", s.failure_reason)
            elif kind == "SparkListenerApplicationStart":
                app.app_id = ev.get("App ID", app.app_id)
                app.app_name = ev.get("App Name", "")
                app.start_ms = ev.get("Timestamp")
            elif kind == "SparkListenerApplicationEnd":
                app.end_ms = ev.get("Timestamp")
                app.complete = True
            elif kind == "SparkListenerJobStart":
                app.jobs += 1
            elif kind == "SparkListenerJobEnd":
                app.failed_jobs += int(ev.get("Job Result", {}).get("Result") != "JobSucceeded")
    if not app.app_id:
        raise BadInputError(parts[0], "not a Spark event log (no SparkListenerApplicationStart)")
    app.executors = len(executors)
    app.stages = [stages[k] for k in sorted(stages)]
    return app


def read_applications(root: str, errors: list[dict[str, str]] | None = None) -> list[ApplicationSummary]:
    """Every application whose event log lies below `root`, ordered by start time. With `errors`, an
    unreadable log (e.g. of a driver killed before it wrote anything useful) is recorded there
    instead of raised, so one killed attempt does not hide the metrics of its successful retry."""
    apps = []
    for parts in find_event_logs(root):
        try:
            apps.append(summarize_application(parts))
        except BadInputError as exc:
            if errors is None:
                raise
            errors.append({"log": exc.source, "problem": exc.problem})
    return sorted(apps, key=lambda a: (a.start_ms or 0, a.app_id))
