"""The work jobs.prepare runs inside Spark tasks (mapInArrow functions over the rows of
jobs.prepare.sampling.files_with_rows): each task reads its input file itself with pyarrow, so the
particle lists never pass through the JVM's row format, does the numpy work array-at-a-time, and
writes Parquet files that appear under their final name only when complete. Training events cross
the shuffle as packed float32 bytes. Only counts and fit statistics go back to the driver."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.errors import BadInputError
from jobs.core.storage import filesystem
from jobs.core.tensors import ShapeError, nested_to_numpy, numpy_to_nested, one_hot
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    ENTRY_COLUMN,
    FEATURES_COLUMNS,
    FEATURES_HLF_COLUMN,
    FEATURES_LABEL_COLUMN,
    FEATURES_PARTICLES_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    N_CLASSES,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    SOURCE_FILE_COLUMN,
)
from jobs.prepare.sampling import FILE
from jobs.prepare.scaling import FitStats, Scaler

ARROW_BATCH_ROWS = 256  # events per Arrow batch handed to Python: ~16 MB of particles as float32
PARQUET_COMPRESSION = "zstd"

# What the tasks return to Spark (mapInArrow output schemas)
STATS_SCHEMA = (
    "events long, hlf_min array<double>, hlf_max array<double>, rows long, mean array<double>, "
    "m2 array<double>, error string, error_file string"
)
SHUFFLE_SCHEMA = "key long, label int, n_particles long, source_file string, entry long, payload binary"
_SHUFFLE_COLUMNS = ["key", FEATURES_LABEL_COLUMN, COUNT_COLUMN, SOURCE_FILE_COLUMN, ENTRY_COLUMN, "payload"]
WRITE_SCHEMA = "rows long, per_class array<long>, bytes long, file string"

_PAYLOAD_FLOATS = N_HLF + N_PARTICLES * N_PARTICLE_FEATURES


def _file_path(url: str) -> str:
    """Spark's file URL (`file:/a%20b/x.parquet`) as a path fsspec opens; other schemes unchanged."""
    if url.startswith("file:"):
        return urllib.parse.unquote(urllib.parse.urlparse(url).path)
    return url


def _file_batches(
    url: str, row_struct: pa.Array
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, pa.Table]]:
    """Stream one input file with pyarrow in batches of ARROW_BATCH_ROWS events and yield, per batch,
    the decisions of its listed rows, their positions in the batch and the batch itself (the columns
    this job uses). Every row of the file is decoded, so every row is shape-checked."""
    decisions = {
        name: row_struct.field(name).to_numpy(zero_copy_only=False) for name in row_struct.type.names
    }
    rows = decisions["row"].astype(np.int64)
    fs, path = filesystem(_file_path(url))
    start = 0
    with fs.open(path, "rb") as handle:
        pf = pq.ParquetFile(handle)
        for batch in pf.iter_batches(batch_size=ARROW_BATCH_ROWS, columns=list(FEATURES_COLUMNS)):
            stop = start + batch.num_rows
            lo, hi = np.searchsorted(rows, [start, stop])
            yield {k: v[lo:hi] for k, v in decisions.items()}, rows[lo:hi] - start, batch
            start = stop


def _arrays(batch: pa.RecordBatch, url: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        hlf = nested_to_numpy(batch.column(FEATURES_HLF_COLUMN), (N_HLF,))
        particles = nested_to_numpy(
            batch.column(FEATURES_PARTICLES_COLUMN), (N_PARTICLES, N_PARTICLE_FEATURES)
        )
    except ShapeError as exc:
        raise BadInputError(url, str(exc)) from None
    return hlf, particles


@dataclass(frozen=True)
class StatsTask:
    """mapInArrow function over files: the fit statistics of the flagged rows (one row per task), or
    the first malformed file. Reads the Parquet files itself (pyarrow): the particle lists never
    pass through the JVM."""

    with_particles: bool

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = FitStats()
        for files in batches:
            for url, rows in zip(files.column(FILE).to_pylist(), files.column("rows"), strict=True):
                try:
                    for d, pos, batch in _file_batches(url, rows.values):
                        hlf, particles = _arrays(batch, url)
                        sel = pos[d["flag"]]
                        total = total.merge(
                            FitStats.of(hlf[sel], particles[sel] if self.with_particles else None)
                        )
                except BadInputError as exc:
                    yield pa.RecordBatch.from_pylist(
                        [{**FitStats().to_row(), "error": exc.problem, "error_file": url}]
                    )
                    return
        yield pa.RecordBatch.from_pylist([{**total.to_row(), "error": None, "error_file": None}])


def _table(out: dict[str, np.ndarray], source_file: pa.Array, entry: pa.Array) -> pa.Table:
    return pa.table(
        {
            HLF_COLUMN: numpy_to_nested(out[HLF_COLUMN]),
            GRU_COLUMN: numpy_to_nested(out[GRU_COLUMN]),
            LABEL_COLUMN: numpy_to_nested(out[LABEL_COLUMN]),
            COUNT_COLUMN: pa.array(out[COUNT_COLUMN], pa.int64()),
            SOURCE_FILE_COLUMN: source_file,
            ENTRY_COLUMN: entry.cast(pa.int64()),
        }
    )


class _AtomicParquet:
    """A Parquet file written under a temporary name and renamed on close (a retried task replaces
    its own file instead of adding a second one); opened lazily, so no rows means no file."""

    def __init__(self, path: str):
        self.path = path
        self._tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression=PARQUET_COMPRESSION)
        self._writer.write_table(table)

    def close(self) -> int:
        if self._writer is None:
            return 0
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return os.path.getsize(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def _pack(hlf: np.ndarray, gru: np.ndarray) -> pa.Array:
    """Prepared HLF and particle rows as one binary value per event (raw little-endian float32, no
    per-value work), so they cross to the JVM, through the shuffle and back as plain bytes."""
    flat = np.concatenate([hlf.reshape(len(hlf), -1), gru.reshape(len(gru), -1)], axis=1).astype("<f4")
    width = 4 * _PAYLOAD_FLOATS
    offsets = np.arange(len(flat) + 1, dtype=np.int32) * np.int32(width)
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(flat), [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(flat))]
    )


def _unpack(payload: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    n = len(payload)
    offsets = np.frombuffer(payload.buffers()[1], np.int32)[payload.offset : payload.offset + n + 1]
    data = np.frombuffer(payload.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    flat = data.view("<f4").reshape(n, _PAYLOAD_FLOATS)
    return flat[:, :N_HLF], flat[:, N_HLF:].reshape(n, N_PARTICLES, N_PARTICLE_FEATURES)


@dataclass(frozen=True)
class TransformTask:
    """mapInArrow function over files: transform the kept events of each file with the fitted scaler;
    write the test events straight to `test_dir/part-<file index>.parquet` and hand the training
    events back to Spark as packed rows for the shuffle."""

    test_dir: str
    scaler: Scaler

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for files in batches:
            urls = files.column(FILE).to_pylist()
            indices = files.column("_file_index").to_pylist()
            for url, index, rows in zip(urls, indices, files.column("rows"), strict=True):
                test = _AtomicParquet(os.path.join(self.test_dir, f"part-{index:05d}.parquet"))
                try:
                    for d, pos, batch in _file_batches(url, rows.values):
                        if not len(pos):
                            continue
                        batch = batch.take(pa.array(pos))
                        hlf, particles = _arrays(batch, url)
                        out = self.scaler.transform(hlf, particles, d["label"].astype(np.int64))
                        is_test = d["is_test"].astype(bool)
                        if is_test.any():
                            sel = np.flatnonzero(is_test)
                            part = {k: v[sel] for k, v in out.items()}
                            test.write(
                                _table(
                                    part,
                                    batch.column(SOURCE_FILE_COLUMN).take(sel),
                                    batch.column(ENTRY_COLUMN).take(sel),
                                )
                            )
                        train = np.flatnonzero(~is_test)
                        if len(train):
                            yield pa.RecordBatch.from_arrays(
                                [
                                    pa.array(d["key"][train], pa.int64()),
                                    pa.array(d["label"][train], pa.int32()),
                                    pa.array(out[COUNT_COLUMN][train], pa.int64()),
                                    batch.column(SOURCE_FILE_COLUMN).take(train),
                                    batch.column(ENTRY_COLUMN).take(train).cast(pa.int64()),
                                    _pack(out[HLF_COLUMN][train], out[GRU_COLUMN][train]),
                                ],
                                _SHUFFLE_COLUMNS,
                            )
                    test.close()
                except BaseException:
                    test.abort()
                    raise


@dataclass(frozen=True)
class TrainWriteTask:
    """mapInArrow function over the shuffled training rows of one partition (in shuffle order):
    unpack and write them as `directory/part-<partition>.parquet`; returns one row of counts."""

    directory: str

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx else 0
        out = _AtomicParquet(os.path.join(self.directory, f"part-{part:05d}.parquet"))
        rows, per_class = 0, np.zeros(N_CLASSES, dtype=np.int64)
        try:
            for batch in batches:
                if not batch.num_rows:
                    continue
                hlf, gru = _unpack(batch.column("payload"))
                labels = batch.column(FEATURES_LABEL_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
                columns = {
                    HLF_COLUMN: hlf,
                    GRU_COLUMN: gru,
                    LABEL_COLUMN: one_hot(labels),
                    COUNT_COLUMN: batch.column(COUNT_COLUMN).to_numpy(zero_copy_only=False),
                }
                out.write(_table(columns, batch.column(SOURCE_FILE_COLUMN), batch.column(ENTRY_COLUMN)))
                rows += batch.num_rows
                per_class += np.bincount(labels, minlength=N_CLASSES)[:N_CLASSES]
            size = out.close()
        except BaseException:
            out.abort()
            raise
        row = {"rows": rows, "per_class": per_class.tolist(), "bytes": size,
               "file": os.path.basename(out.path) if size else None}  # fmt: skip
        yield pa.RecordBatch.from_pylist([row])
