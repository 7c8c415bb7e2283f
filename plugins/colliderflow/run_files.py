"""Where a DAG run's outputs are, for the results views: the run directory (the run's `output_root`
Param, else its default, then `<dag id>/<run id>`) on any store, and a file inside it named by a
relative path that cannot leave it (no `..`, no absolute path, no symlink pointing out of it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from colliderflow.dagkit import data_root, run_dir

# what each stage task writes below the run directory (the views show it; bookkeeping tasks write none)
TASK_OUTPUTS = {"dimuon": "dimuon", "generate": "samples", "ingest": "features", "prepare": "prepared",
                "tfrecords": "tfrecords", "train": "model", "evaluate": "evaluation",
                "collect_metrics": "report", "quality_gate": "evaluation"}  # fmt: skip
MAX_FILE_BYTES = 256 << 20


class NotFound(Exception):
    """No such run, or no such file in it."""


class Refused(Exception):
    """A path that would leave the run directory."""


def default_output_root() -> str:
    return f"{data_root()}/runs"


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    state: str | None
    start_date: Any  # when it started, else when it was due (a queued run)
    conf: dict
    logical_date: Any = None  # the night it stands for (a March backfill: March), None for some manual runs

    @property
    def output_root(self) -> str:
        return str((self.conf or {}).get("output_root") or default_output_root())

    @property
    def directory(self) -> str:
        return run_dir(self.output_root, self.dag_id, self.run_id)

    @property
    def date(self) -> Any:
        """The date the trends plot it at: its logical date, else when it ran."""
        return self.logical_date or self.start_date


def find_runs(dag_id: str, run_id: str | None = None, limit: int = 200) -> list[Run]:
    """The DAG's runs (or the one `run_id`) from the metadata DB, oldest first."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = (
        DagRun.run_id,
        DagRun.state,
        DagRun.start_date,
        DagRun.run_after,
        DagRun.conf,
        DagRun.logical_date,
    )
    query = select(*columns).where(DagRun.dag_id == dag_id)
    if run_id is not None:
        query = query.where(DagRun.run_id == run_id)
    with create_session() as session:
        rows = session.execute(query.order_by(DagRun.id.desc()).limit(limit)).all()
    return [_run(dag_id, row) for row in rows][::-1]


def _run(dag_id: str, row: Any) -> Run:
    state = str(row.state) if row.state else None
    return Run(dag_id, row.run_id, state, row.start_date or row.run_after, row.conf or {}, row.logical_date)


def the_run(dag_id: str, run_id: str) -> Run:
    runs = find_runs(dag_id, run_id)
    if not runs:
        raise NotFound(f"no run {run_id!r} of {dag_id!r}")
    return runs[0]


def safe_relative(path: str) -> str:
    """`path` as a relative path inside a run directory, or Refused: absolute paths, `..`, `.`, empty
    segments, backslashes and NUL bytes are never followed."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise Refused(f"not a relative path inside the run directory: {path!r}")
    if any(p in ("", ".", "..") for p in path.split("/")):
        raise Refused(f"not a relative path inside the run directory: {path!r}")
    return path


def open_file(directory: str, path: str) -> bytes:
    """The bytes of the file `path` inside `directory` (a local path or a store URL)."""
    from jobs.core.storage import filesystem, is_local

    rel = safe_relative(path)
    target = f"{directory.rstrip('/')}/{rel}"
    fs, where = filesystem(target)
    if is_local(directory):  # a symlink inside the run directory must not lead out of it
        root = os.path.realpath(filesystem(directory)[1])
        real = os.path.realpath(where)
        if not real.startswith(root + os.sep):
            raise Refused(f"{path!r} leads out of the run directory")
    if not fs.isfile(where):
        raise NotFound(f"no file {path!r} in the run directory")
    if fs.size(where) > MAX_FILE_BYTES:
        raise Refused(f"{path!r} is larger than {MAX_FILE_BYTES >> 20} MB: open it from the store")
    return fs.cat_file(where)


def list_folder(directory: str, folder: str) -> list[tuple[str, int]]:
    """(name relative to the run directory, size) of the files of `folder`, its sub-folders included."""
    from jobs.core.storage import filesystem

    base = f"{directory.rstrip('/')}/{safe_relative(folder)}"
    fs, where = filesystem(base)
    if not fs.isdir(where):
        return []
    found = fs.find(where, detail=True)
    prefix = where.rstrip("/") + "/"
    return sorted((f"{folder}/{p[len(prefix) :]}", int(i.get("size") or 0)) for p, i in found.items())
