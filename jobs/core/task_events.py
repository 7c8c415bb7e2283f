"""The process executor's task metrics, in the form jobs.metrics already reads: a Spark event log.

Each task (one item of a round) is measured in its worker process — wall and CPU time, bytes the
process read and wrote while it ran (/proc/self/io), the worker's peak resident memory, the records
its item names (a chunk's entries, a file's rows) and what it read — and the driver writes the tasks
as one application of Spark listener events (application, job, one stage per round, task events with
the fields jobs.metrics.eventlog sums) into the run's event-log directory. A DAG run's report then
has the same stage table whichever engine ran the stage.
"""

from __future__ import annotations

import json
import os
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from jobs.core.storage import filesystem

T = TypeVar("T")
C = TypeVar("C")
# An application id of this executor; jobs.metrics.eventlog finds logs by this prefix.
APP_PREFIX = "processes-"


@dataclass(frozen=True)
class TaskRecord:
    index: int
    worker: int  # the worker's pid: Spark's executor id
    launch_ms: int
    finish_ms: int
    cpu_ns: int
    read_bytes: int
    written_bytes: int
    peak_rss_bytes: int
    records_read: int = 0  # the entries or rows the task's item names, where it names them
    source: str = ""  # what the task read (describe)


def _head(item: object) -> object:
    return _head(item[0]) if isinstance(item, tuple) and item else item


def describe(item: object) -> str:
    """What a task reads, for an error line or its record: the file and, for a chunk, its entry range."""
    head = _head(item)
    url = getattr(head, "url", None) or getattr(head, "source", None)
    if url is None:
        return repr(item)[:200]
    start, stop = getattr(head, "start", None), getattr(head, "stop", None)
    return f"{url} entries {start}-{stop}" if start is not None else f"{url}"


def records_of(item: object) -> int:
    """The records a task's item names: a chunk's entries, an input file's rows; 0 when unknown."""
    head = _head(item)
    n = getattr(head, "entries", None)
    n = getattr(head, "rows", None) if n is None else n
    return int(n) if isinstance(n, int | np.integer) else 0


def _io_counters() -> tuple[int, int]:
    """Bytes this process has read and written through system calls (files, pipes, sockets)."""
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return int(fields["rchar"]), int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return 0, 0


@dataclass(frozen=True)
class Round:
    """The tasks of one map or shuffle step: a Spark stage in the event log."""

    name: str
    tasks: list[TaskRecord]


class Measured(Generic[T, C]):
    """`fn` as a task that also returns its TaskRecord: called with (index, item) in a worker process.
    While it runs, an empty file named by its index in `running` says so: the driver's way to name
    the task whose worker died. A class, not a closure, so that it pickles to the workers."""

    def __init__(self, fn: Callable[[T], C], running: str | None = None):
        self.fn = fn
        self.running = running

    def __call__(self, indexed: tuple[int, T]) -> tuple[C, TaskRecord]:
        index, item = indexed
        marker = os.path.join(self.running, str(index)) if self.running else None
        if marker:
            open(marker, "wb").close()
        read0, written0 = _io_counters()
        cpu0, launch = time.process_time_ns(), time.time()
        result = self.fn(item)
        cpu, finish = time.process_time_ns() - cpu0, time.time()
        if marker:
            os.remove(marker)
        read1, written1 = _io_counters()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
        record = TaskRecord(
            index,
            os.getpid(),
            int(launch * 1e3),
            int(finish * 1e3),
            cpu,
            read1 - read0,
            written1 - written0,
            peak,
            records_of(item),
            describe(item),
        )
        return result, record


def _task_end(record: TaskRecord, stage: int, task_id: int) -> dict[str, Any]:
    return {
        "Event": "SparkListenerTaskEnd",
        "Stage ID": stage,
        "Stage Attempt ID": 0,
        "Task End Reason": {"Reason": "Success"},
        "Task Info": {
            "Task ID": task_id,
            "Executor ID": str(record.worker),
            "Launch Time": record.launch_ms,
            "Finish Time": record.finish_ms,
            "Failed": False,
            "colliderflow.input": record.source,  # beside Spark's fields: what this task read
        },
        "Task Metrics": {
            "Executor Run Time": record.finish_ms - record.launch_ms,
            "Executor CPU Time": record.cpu_ns,
            "Input Metrics": {"Bytes Read": record.read_bytes, "Records Read": record.records_read},
            "Output Metrics": {"Bytes Written": record.written_bytes, "Records Written": 0},
            "Peak Execution Memory": record.peak_rss_bytes,
        },
    }


def new_app_id(start_ms: int) -> str:
    return f"{APP_PREFIX}{start_ms}-{uuid.uuid4().hex[:8]}"


def _stage_events(app_name: str, stage: int, rnd: Round, first_task: int) -> list[dict[str, Any]]:
    launch = min((t.launch_ms for t in rnd.tasks), default=0)
    finish = max((t.finish_ms for t in rnd.tasks), default=launch)
    info = {"Stage ID": stage, "Stage Attempt ID": 0, "Stage Name": f"{app_name} {rnd.name}",
            "Number of Tasks": len(rnd.tasks), "Submission Time": launch}  # fmt: skip
    return [
        {"Event": "SparkListenerStageSubmitted", "Stage Info": info},
        *(_task_end(t, stage, first_task + i) for i, t in enumerate(rnd.tasks)),
        {"Event": "SparkListenerStageCompleted", "Stage Info": {**info, "Completion Time": finish}},
    ]


def write_event_log(
    event_log_dir: str, app_name: str, app_id: str, start_ms: int, end_ms: int, rounds: Sequence[Round]
) -> str:
    """Write the rounds' tasks as one application's event log (a job, one stage per round) under
    `event_log_dir`; returns the app id."""
    stages, first_task = [], 0
    for stage, rnd in enumerate(rounds):
        stages += _stage_events(app_name, stage, rnd, first_task)
        first_task += len(rnd.tasks)
    events = [
        {
            "Event": "SparkListenerApplicationStart",
            "App Name": app_name,
            "App ID": app_id,
            "Timestamp": start_ms,
        },
        {"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": start_ms},
        *stages,
        {"Event": "SparkListenerJobEnd", "Job ID": 0, "Job Result": {"Result": "JobSucceeded"}},
        {"Event": "SparkListenerApplicationEnd", "Timestamp": end_ms},
    ]
    fs, path = filesystem(f"{event_log_dir.rstrip('/')}/{app_id}")
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, "".join(json.dumps(e) + "\n" for e in events).encode())
    return app_id
