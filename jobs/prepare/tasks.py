"""The work jobs.prepare runs in its executor's tasks (jobs.core.engine: worker processes or Spark), one
task per input file: each task reads its file
itself with pyarrow through the storage layer (local, s3://, any fsspec URL; no Hadoop connector),
decides per row from the row's identity (jobs.prepare.sampling), does the numpy work array-at-a-time
and writes its parts straight into the output's location (jobs.core.part_files), so no executor
needs a disk shared with the driver or another executor. Training events cross the shuffle as packed
float32 bytes. Only counts and fit statistics go back to the driver."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.errors import BadInputError
from jobs.core.finite import check_finite
from jobs.core.part_files import PartFile
from jobs.core.storage import filesystem
from jobs.core.tensors import (
    ShapeError,
    nested_to_numpy,
    numpy_to_nested,
    one_hot,
    pad_rows,
    particle_rows,
    rows_to_ragged,
)
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    ENTRY_COLUMN,
    FEATURE_NAMES,
    FEATURES_COLUMNS,
    FEATURES_HLF_COLUMN,
    FEATURES_LABEL_COLUMN,
    FEATURES_PARTICLES_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    N_CLASSES,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    SOURCE_FILE_COLUMN,
    prepared_arrow_schema,
)
from jobs.prepare.inputs import InputFile
from jobs.prepare.kept_rows import Kept, KeptWriter, cache_path, read_kept
from jobs.prepare.sampling import Identity, Plan
from jobs.prepare.scaling import FitStats, Scaler

ARROW_BATCH_ROWS = 256  # events per Arrow batch handed to Python: ~16 MB of particles as float32
PARQUET_COMPRESSION = "zstd"
# Only the file-name column repeats: dictionary-encoding (and min/max statistics of) the float lists
# is work whose result the writer throws away
PARQUET_OPTIONS = {
    "compression": PARQUET_COMPRESSION,
    "use_dictionary": [SOURCE_FILE_COLUMN],
    "write_statistics": [COUNT_COLUMN, ENTRY_COLUMN],
}

# The training rows as they cross the shuffle (jobs.core.engine.sorted_shuffle), as Spark DDL
SHUFFLE_SCHEMA = (
    "key long, label int, n_particles long, source_file string, entry long, hlf binary, rows binary"
)
SHUFFLE_KEY = "key"
_SHUFFLE_COLUMNS = [
    SHUFFLE_KEY,
    FEATURES_LABEL_COLUMN,
    COUNT_COLUMN,
    SOURCE_FILE_COLUMN,
    ENTRY_COLUMN,
    "hlf",
    "rows",
]


def _decided_batches(
    f: InputFile, plan: Plan
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray, np.ndarray]]:
    """Stream one input file with pyarrow in batches of ARROW_BATCH_ROWS events and yield each batch
    with its rows' decisions (kept, is_test, shuffle key)."""
    columns = list(FEATURES_COLUMNS) + ([FEATURES_LABEL_COLUMN] if f.has_label_column else [])
    fs, path = filesystem(f.url)
    start = 0
    with fs.open(path, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=ARROW_BATCH_ROWS, columns=columns):
            if f.has_label_column:
                labels = batch.column(FEATURES_LABEL_COLUMN).to_numpy(zero_copy_only=False)
                if not np.all(labels == f.label):
                    raise BadInputError(f.url, f"label column disagrees with its directory label={f.label}")
            ident = Identity.of(f.label, batch.column(SOURCE_FILE_COLUMN), batch.column(ENTRY_COLUMN))
            yield (batch, *plan.decide(f, ident, start))
            start += batch.num_rows


def _arrays(batch: pa.RecordBatch, url: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HLF (n, 14) and the particle rows, flat, with each event's row count (tensors.particle_rows)."""
    try:
        hlf = nested_to_numpy(batch.column(FEATURES_HLF_COLUMN), (N_HLF,))
        # either ingestion layout: the reference's padded 801 x 19, or the real rows only (ragged)
        rows, lengths = particle_rows(
            batch.column(FEATURES_PARTICLES_COLUMN), N_PARTICLES, N_PARTICLE_FEATURES
        )
    except ShapeError as exc:
        raise BadInputError(url, str(exc)) from None
    return hlf, rows, lengths


@dataclass
class FitResult:
    """Fit statistics of the flagged rows per input file and kept events per (class, split) of some
    files; mergeable. The files' statistics are folded in file order only at the end (`stats`), so the
    fitted scaler is bit-for-bit the same whatever order the executor merged the tasks in.
    `error`: (file, problem) of the first malformed file (every row of every file is decoded)."""

    per_file: dict[int, FitStats] = field(default_factory=dict)
    split: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, 2), dtype=np.int64))
    error: tuple[str, str] | None = None

    def __add__(self, other: FitResult) -> FitResult:
        errors = sorted(e for e in (self.error, other.error) if e)
        return FitResult(
            {**self.per_file, **other.per_file}, self.split + other.split, errors[0] if errors else None
        )

    @property
    def stats(self) -> FitStats:
        return functools.reduce(FitStats.merge, (self.per_file[i] for i in sorted(self.per_file)), FitStats())


@dataclass(frozen=True)
class FitTask:
    """Map function over input files: fit statistics of the training split (`fit_all`: of every
    event) and the kept events per split."""

    plan: Plan
    with_particles: bool
    fit_all: bool
    scratch: str | None = None  # where the kept events wait for the transform round (same machine)

    def __call__(self, f: InputFile) -> FitResult:
        out, stats = FitResult(), FitStats()
        cache = KeptWriter(cache_path(self.scratch, f.index)) if self.scratch else None
        try:
            for batch, kept, is_test, shuffle in _decided_batches(f, self.plan):
                hlf, rows, lengths = _arrays(batch, f.url)
                # every row is decoded here first: the transform round reads checked rows only
                check_finite(
                    f.url, {FEATURES_HLF_COLUMN: hlf, FEATURES_PARTICLES_COLUMN: rows}, FEATURE_NAMES
                )
                out.split[f.label, 0] += int((kept & ~is_test).sum())
                out.split[f.label, 1] += int((kept & is_test).sum())
                sel = np.ones(batch.num_rows, dtype=bool) if self.fit_all else kept & ~is_test
                sel_rows = rows[np.repeat(sel, lengths)] if self.with_particles else None
                stats = stats.merge(FitStats.of(hlf[sel], sel_rows))
                if cache is not None and kept.any():
                    cache.write(_select(batch, hlf, rows, lengths, kept, is_test, shuffle))
            if cache is not None:
                cache.close()
        except BadInputError as exc:
            if cache is not None:
                cache.abort()
            return FitResult(error=(exc.source, exc.problem))
        except BaseException:
            if cache is not None:
                cache.abort()
            raise
        out.per_file[f.index] = stats
        return out


def _select(batch: pa.RecordBatch, hlf: np.ndarray, rows: np.ndarray, lengths: np.ndarray,
            kept: np.ndarray, is_test: np.ndarray, shuffle: np.ndarray) -> Kept:  # fmt: skip
    """The kept events of a decoded batch (numpy takes, not Arrow's take of nested lists)."""
    pos = np.flatnonzero(kept)
    if len(pos) < batch.num_rows:
        hlf, rows, lengths = hlf[pos], rows[np.repeat(kept, lengths)], lengths[pos]
        batch = batch.select([SOURCE_FILE_COLUMN, ENTRY_COLUMN]).take(pa.array(pos))
    source, entry = _identity(batch, np.arange(batch.num_rows))
    return Kept(hlf, rows, lengths, source, entry, is_test[pos], shuffle[pos])


def kept_events(f: InputFile, plan: Plan, scratch: str | None) -> Iterator[Kept]:
    """A file's kept events: from the fit round's cache when it left one, else read and decided again."""
    if scratch and os.path.exists(cache_path(scratch, f.index)):
        yield from read_kept(cache_path(scratch, f.index))
        return
    for batch, kept, is_test, shuffle in _decided_batches(f, plan):
        if kept.any():
            yield _select(batch, *_arrays(batch, f.url), kept, is_test, shuffle)


@dataclass
class Prepared:
    """Prepared events of one batch: scaled HLF (n, 14), labels (n,), real-particle counts (n,) and the
    particle rows, flat (R, 19) with `row_lengths[i]` rows for event i: the real rows only (global
    scaling) or all 801 (per-event scaling, whose padding is not zero)."""

    hlf: np.ndarray
    labels: np.ndarray
    n_particles: np.ndarray
    rows: np.ndarray
    row_lengths: np.ndarray

    @classmethod
    def of(cls, scaler: Scaler, kept: Kept, labels: np.ndarray) -> Prepared:
        if scaler.particle_scaling == "global":
            hlf_s, rows, n_real = scaler.transform_rows(kept.hlf, kept.rows, kept.lengths)
            return cls(hlf_s, labels, n_real.astype(np.int64), rows, n_real)
        out = scaler.transform(kept.hlf, kept.particles, labels)
        n = len(labels)
        rows = out[GRU_COLUMN].reshape(n * N_PARTICLES, N_PARTICLE_FEATURES)
        return cls(out[HLF_COLUMN], labels, out[COUNT_COLUMN], rows, np.full(n, N_PARTICLES))

    def take(self, sel: np.ndarray) -> Prepared:
        """The events at positions `sel` (increasing)."""
        mask = np.zeros(len(self.labels), dtype=bool)
        mask[sel] = True
        rows = self.rows[np.repeat(mask, self.row_lengths)]
        return Prepared(self.hlf[sel], self.labels[sel], self.n_particles[sel], rows, self.row_lengths[sel])

    def gru(self, layout: str) -> pa.Array:
        """GRU_input in the stored layout (jobs.dltrigger_schema.PARTICLE_LAYOUTS)."""
        if layout == "ragged":
            return rows_to_ragged(self.rows, self.row_lengths)
        n = len(self.labels)
        if (self.row_lengths == N_PARTICLES).all():
            dense = self.rows.reshape(n, N_PARTICLES, N_PARTICLE_FEATURES)
        else:
            dense = pad_rows(self.rows, self.row_lengths, N_PARTICLES)
        return numpy_to_nested(dense)

    def table(self, layout: str, source_file: pa.Array, entry: pa.Array) -> pa.Table:
        return pa.Table.from_arrays(
            [
                numpy_to_nested(self.hlf),
                self.gru(layout),
                numpy_to_nested(one_hot(self.labels)),
                pa.array(self.n_particles, pa.int64()),
                source_file.cast(pa.string()),
                entry.cast(pa.int64()),
            ],
            schema=prepared_arrow_schema(layout),
        )


class _PartParquet:
    """A Parquet part at its final URL (jobs.core.part_files.PartFile), opened lazily: no rows, no file."""

    def __init__(self, url: str):
        self.url = url
        self._part: PartFile | None = None
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._part = PartFile(self.url)
            self._writer = pq.ParquetWriter(self._part.file, table.schema, **PARQUET_OPTIONS)
        self._writer.write_table(table)

    def close(self) -> int:
        if self._writer is None:
            return 0
        self._writer.close()
        self._writer = None
        return self._part.commit()

    def abort(self) -> None:
        if self._part is not None:
            self._part.abort()
        self._writer = self._part = None


def _binary(flat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """float32 values as one binary value per event (event i: `lengths[i]` floats, raw little-endian),
    so they cross to the JVM, through the shuffle and back as plain bytes (no per-value work)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64) * 4, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("too many bytes for one Arrow batch (32-bit offsets); use smaller batches")
    data = np.ascontiguousarray(flat, dtype="<f4")
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(lengths), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _floats(payload: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of _binary: all float32 values (flat) and each event's count of them."""
    n = len(payload)
    offsets = np.frombuffer(payload.buffers()[1], np.int32)[payload.offset : payload.offset + n + 1]
    data = np.frombuffer(payload.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.view("<f4"), np.diff(offsets) // 4


def _pack(p: Prepared) -> list[pa.Array]:
    return [
        _binary(p.hlf, np.full(len(p.labels), N_HLF)),
        _binary(p.rows, p.row_lengths * N_PARTICLE_FEATURES),
    ]


def _unpack(batch: pa.RecordBatch) -> Prepared:
    hlf, _ = _floats(batch.column("hlf"))
    rows, sizes = _floats(batch.column("rows"))
    labels = batch.column(FEATURES_LABEL_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    return Prepared(
        hlf.reshape(-1, N_HLF),
        labels,
        batch.column(COUNT_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64),
        rows.reshape(-1, N_PARTICLE_FEATURES),
        sizes // N_PARTICLE_FEATURES,
    )


@dataclass(frozen=True)
class TransformTask:
    """The shuffle's map side, one input file per task: transform the file's kept events with the
    fitted scaler; write the test events straight to `test_url/part-<file index>.parquet` in `layout`
    and yield the training events as packed rows for the shuffle (real rows only under global
    scaling, whatever the layout)."""

    test_url: str
    plan: Plan
    scaler: Scaler
    layout: str
    scratch: str | None = None  # where the fit round left the kept events, if on this machine

    def __call__(self, f: InputFile) -> Iterator[pa.RecordBatch]:
        test = _PartParquet(f"{self.test_url}/part-{f.index:05d}.parquet")
        try:
            for k in kept_events(f, self.plan, self.scratch):
                labels = np.full(len(k.shuffle), f.label, dtype=np.int64)
                out = Prepared.of(self.scaler, k, labels)
                if k.is_test.any():
                    sel = np.flatnonzero(k.is_test)
                    test.write(out.take(sel).table(self.layout, k.source_file.take(sel), k.entry.take(sel)))
                train = np.flatnonzero(~k.is_test)
                if len(train):
                    part = out.take(train) if len(train) < len(labels) else out
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(k.shuffle[train], pa.int64()), pa.array(labels[train], pa.int32()),
                         pa.array(part.n_particles, pa.int64()), k.source_file.take(train),
                         k.entry.take(train), *_pack(part)],
                        _SHUFFLE_COLUMNS,
                    )  # fmt: skip
            test.close()
        except BaseException:
            test.abort()
            raise


def _identity(batch: pa.RecordBatch, sel: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """The source file and entry columns of the rows at `sel`."""
    return (
        batch.column(SOURCE_FILE_COLUMN).take(sel).cast(pa.string()),
        batch.column(ENTRY_COLUMN).take(sel).cast(pa.int64()),
    )


@dataclass(frozen=True)
class TrainWriter:
    """The shuffle's reduce side: one partition's training rows, in shuffle order, unpacked and written
    in `layout` as `url/part-<partition>.parquet`; returns the partition's counts."""

    url: str
    layout: str

    def __call__(self, part: int, batches: Iterator[pa.RecordBatch]) -> dict:
        name = f"part-{part:05d}.parquet"
        out = _PartParquet(f"{self.url}/{name}")
        rows, per_class = 0, np.zeros(N_CLASSES, dtype=np.int64)
        try:
            for batch in batches:
                if not batch.num_rows:
                    continue
                prepared = _unpack(batch)
                out.write(
                    prepared.table(self.layout, batch.column(SOURCE_FILE_COLUMN), batch.column(ENTRY_COLUMN))
                )
                rows += batch.num_rows
                per_class += np.bincount(prepared.labels, minlength=N_CLASSES)[:N_CLASSES]
            size = out.close()
        except BaseException:
            out.abort()
            raise
        return {"rows": rows, "per_class": per_class.tolist(), "bytes": size, "file": name if size else None}
