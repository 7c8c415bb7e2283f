"""DL-trigger feature preparation: the ingestion Parquet -> balanced, scaled training and test sets.

    python -m jobs.prepare --input DIR --output DIR [--seed 42] [--test-fraction 0.2]
        [--scaler-fit train|all] [--particle-scaling global|per-event] [--shuffle-partitions N]

A Spark job; the dataset never goes to the driver. Per event it is decided with seeded 64-bit hashes
of (source_file, entry) — independent of partitioning, file order and retries — whether it survives
the undersampling (the n_min lowest hashes of each class are kept: exact class counts), whether it
goes to the test split, and where it lands in the shuffled training set. Spark SQL does this narrow
work on (label, source_file, entry, file, row index) only. The particle lists never go through
Spark's row format: tasks read the Parquet files themselves with pyarrow (one task per file, told
which rows to take), do the numpy work (ΔR ordering, scaling) array-at-a-time, write the test events
directly and hand the training events to Spark's shuffle as packed float32 bytes, which a last
mapInArrow stage unpacks and writes in shuffled order. Only counts come back to the driver.
Outputs (DIR/train/, DIR/test/, scaler.json, summary.json, metrics.json) appear atomically.
Semantics and options: docs/dl-trigger-preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common import cli
from jobs.common.errors import BadInputError, UsageError
from jobs.common.metrics import job_metrics
from jobs.common.prepare_features import PARTICLE_SCALINGS, SCALER_FITS, FitStats, Scaler
from jobs.common.prepared import (
    COUNT_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    N_CLASSES,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    ShapeError,
    nested_to_numpy,
    numpy_to_nested,
    one_hot,
)
from jobs.common.spark import spark_info, spark_session
from jobs.common.storage import atomic_output_dir, filesystem, is_local, write_json

log = logging.getLogger("jobs.prepare")

CLASS_NAMES = ("QCD", "ttbar", "W+jets")
SPLITS = ("train", "test")
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.2
ROWS_PER_PARTITION = 10_000  # training events per shuffle partition (= output file) when not given
ARROW_BATCH_ROWS = 256  # events per Arrow batch handed to Python: ~16 MB of particles as float32
# Row batches small enough for 801 x 19 floats per row: Spark's vectorized Parquet reader allocates
# one contiguous vector per batch (its default of 4096 rows asks for ~250 MB per column and task and
# runs the JVM out of heap), and Arrow batches to Python of the same size.
BATCH_CONF = {
    "spark.sql.parquet.columnarReaderBatchSize": str(ARROW_BATCH_ROWS),
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
}
PARQUET_COMPRESSION = "zstd"
_FILE = "_file"  # the Parquet file a row came from (Spark's _metadata.file_path)
_ROW = "_row"  # its row index in that file (Spark's _metadata.row_index)
INPUT_COLUMNS = ("hfeatures", "particles", "source_file", "entry")

_STATS_SCHEMA = (
    "events long, hlf_min array<double>, hlf_max array<double>, rows long, mean array<double>, "
    "m2 array<double>, error string, error_file string"
)
_WRITE_SCHEMA = "rows long, per_class array<long>, bytes long, file string"


def _check_schema(schema, url: str) -> None:
    """The ingestion contract, with the culprit named: column present and of a usable type."""
    from pyspark.sql import types as T

    floats = (T.FloatType, T.DoubleType)
    ints = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)

    def is_array_of(dt, inner) -> bool:
        return isinstance(dt, T.ArrayType) and inner(dt.elementType)

    expected = {
        "hfeatures": ("array<float>", lambda dt: is_array_of(dt, lambda e: isinstance(e, floats))),
        "particles": (
            "array<array<float>>",
            lambda dt: is_array_of(dt, lambda e: is_array_of(e, lambda x: isinstance(x, floats))),
        ),
        "label": ("an integer (or the label=K partition directories)", lambda dt: isinstance(dt, ints)),
        "source_file": ("string", lambda dt: isinstance(dt, T.StringType)),
        "entry": ("an integer", lambda dt: isinstance(dt, ints)),
    }
    fields = {f.name: f.dataType for f in schema.fields}
    missing = [name for name in expected if name not in fields]
    if missing:
        raise BadInputError(
            url,
            f"not an ingestion output: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(fields) or 'none'})",
        )
    for name, (want, ok) in expected.items():
        if not ok(fields[name]):
            raise BadInputError(url, f"column {name} is {fields[name].simpleString()}, expected {want}")


def _read_input(spark, url: str):
    """The ingestion dataset as a DataFrame (hive partitions label=K), after checking it is there."""
    if is_local(url):
        fs, path = filesystem(url)
        if not fs.isdir(path):
            raise BadInputError(url, "no such directory (expected the jobs.ingest output)")
        if not any(p.endswith(".parquet") for p in fs.find(path)):
            raise BadInputError(url, "holds no .parquet file (empty input; expected the jobs.ingest output)")
        url = os.path.abspath(path)
    from pyspark.sql import functions as F

    df = spark.read.option("pathGlobFilter", "*.parquet").parquet(url)  # not summary.json etc.
    _check_schema(df.schema, url)
    return df.withColumn(_FILE, F.col("_metadata.file_path")).withColumn(_ROW, F.col("_metadata.row_index"))


def _class_counts(df, url: str) -> dict[int, int]:
    rows = df.groupBy("label").count().collect()
    counts = {r["label"]: int(r["count"]) for r in rows}
    if not counts:
        raise BadInputError(url, "holds no events (empty input)")
    bad = sorted(k for k in counts if k is None or not 0 <= k < N_CLASSES)
    if bad:
        raise BadInputError(url, f"label value(s) {bad} outside 0..{N_CLASSES - 1}")
    absent = [k for k in range(N_CLASSES) if k not in counts]
    if absent:
        names = ", ".join(f"{k} ({CLASS_NAMES[k]})" for k in absent)
        raise BadInputError(url, f"class(es) {names} have no events; undersampling needs all {N_CLASSES}")
    return {k: counts[k] for k in range(N_CLASSES)}


def _event_hash(seed: int, purpose: str):
    """A seeded 64-bit hash of the event identity, different for each purpose (so the kept events,
    the split and the shuffle order are independent of each other)."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(int(seed)), F.lit(purpose), F.col("source_file"), F.col("entry"))


def _undersample(df, counts: dict[int, int], seed: int):
    """Exactly n_min events of every class: the n_min smallest (hash, source_file, entry) of each
    larger class. The ranking runs on a narrow projection; only one threshold row per class comes to
    the driver, and the wide rows are then filtered in place (no shuffle of the particle lists)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    n_min = min(counts.values())
    df = df.withColumn("_keep_key", _event_hash(seed, "undersample"))
    larger = [k for k, n in counts.items() if n > n_min]
    keep = F.col("label").isin([k for k, n in counts.items() if n == n_min])
    if larger:
        order = Window.partitionBy("label").orderBy("_keep_key", "source_file", "entry")
        thresholds = (
            df.where(F.col("label").isin(larger))
            .select("label", "_keep_key", "source_file", "entry")
            .withColumn("_rank", F.row_number().over(order))
            .where(F.col("_rank") == n_min)
            .collect()
        )
        for t in thresholds:
            key, src, entry = F.col("_keep_key"), F.col("source_file"), F.col("entry")
            at_or_below = (key < t["_keep_key"]) | (
                (key == t["_keep_key"])
                & ((src < t["source_file"]) | ((src == t["source_file"]) & (entry <= t["entry"])))
            )
            keep = keep | ((F.col("label") == t["label"]) & at_or_below)
    return df.where(keep)


def _with_split(df, seed: int, test_fraction: float):
    """`_is_test`: a seeded per-event Bernoulli(test_fraction) draw from a 53-bit slice of a hash."""
    from pyspark.sql import functions as F

    u = _event_hash(seed, "split").bitwiseAND(F.lit((1 << 53) - 1)).cast("double") / float(1 << 53)
    return df.withColumn("_is_test", u < float(test_fraction))


def _file_path(url: str) -> str:
    """Spark's file URL (`file:/a%20b/x.parquet`) as a path fsspec opens; other schemes unchanged."""
    if url.startswith("file:"):
        return urllib.parse.unquote(urllib.parse.urlparse(url).path)
    return url


def _files_with_rows(df, flag: str):
    """One row per input file: its index in sorted order and the sorted row indices of the events of
    `df` in it, with label, split, shuffle key and `flag` (which rows a task acts on). Narrow data;
    round-robin repartitioned so that every file is a task of its own."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = F.struct(
        F.col(_ROW).alias("row"),
        F.col("label").cast("int").alias("label"),
        F.col(flag).alias("flag"),
        F.col("_is_test").alias("is_test"),
        F.col("_shuffle_key").alias("key"),
    )
    files = df.groupBy(_FILE).agg(F.sort_array(F.collect_list(rows)).alias("rows"))
    # number the files in one partition on the file names alone, not on the rows lists
    names = df.select(_FILE).distinct()
    names = names.withColumn("_file_index", F.row_number().over(Window.orderBy(_FILE)) - 1)
    files = files.join(F.broadcast(names), _FILE)
    n_files = max(1, len(df.inputFiles()))
    return files.repartition(n_files)


def _file_batches(
    url: str, row_struct: pa.Array
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, pa.Table]]:
    """Stream one input file with pyarrow in batches of ARROW_BATCH_ROWS events and yield, per batch,
    the decisions of its listed rows, their positions in the batch and the batch itself (the columns
    this job uses). Every row of the file is decoded, so every row is shape-checked."""
    import pyarrow.parquet as pq

    decisions = {
        name: row_struct.field(name).to_numpy(zero_copy_only=False) for name in row_struct.type.names
    }
    rows = decisions["row"].astype(np.int64)
    fs, path = filesystem(_file_path(url))
    start = 0
    with fs.open(path, "rb") as handle:
        pf = pq.ParquetFile(handle)
        for batch in pf.iter_batches(batch_size=ARROW_BATCH_ROWS, columns=list(INPUT_COLUMNS)):
            stop = start + batch.num_rows
            lo, hi = np.searchsorted(rows, [start, stop])
            yield {k: v[lo:hi] for k, v in decisions.items()}, rows[lo:hi] - start, batch
            start = stop


def _arrays(batch: pa.RecordBatch, url: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        hlf = nested_to_numpy(batch.column("hfeatures"), (N_HLF,))
        particles = nested_to_numpy(batch.column("particles"), (N_PARTICLES, N_PARTICLE_FEATURES))
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
            for url, rows in zip(files.column(_FILE).to_pylist(), files.column("rows"), strict=True):
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
            "source_file": source_file,
            "entry": entry.cast(pa.int64()),
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


_PAYLOAD_FLOATS = N_HLF + N_PARTICLES * N_PARTICLE_FEATURES
_SHUFFLE_SCHEMA = "key long, label int, n_particles long, source_file string, entry long, payload binary"


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
            urls = files.column(_FILE).to_pylist()
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
                                    batch.column("source_file").take(sel),
                                    batch.column("entry").take(sel),
                                )
                            )
                        train = np.flatnonzero(~is_test)
                        if len(train):
                            yield pa.RecordBatch.from_arrays(
                                [
                                    pa.array(d["key"][train], pa.int64()),
                                    pa.array(d["label"][train], pa.int32()),
                                    pa.array(out[COUNT_COLUMN][train], pa.int64()),
                                    batch.column("source_file").take(train),
                                    batch.column("entry").take(train).cast(pa.int64()),
                                    _pack(out[HLF_COLUMN][train], out[GRU_COLUMN][train]),
                                ],
                                ["key", "label", "n_particles", "source_file", "entry", "payload"],
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
                labels = batch.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
                columns = {
                    HLF_COLUMN: hlf,
                    GRU_COLUMN: gru,
                    LABEL_COLUMN: one_hot(labels),
                    COUNT_COLUMN: batch.column("n_particles").to_numpy(zero_copy_only=False),
                }
                out.write(_table(columns, batch.column("source_file"), batch.column("entry")))
                rows += batch.num_rows
                per_class += np.bincount(labels, minlength=N_CLASSES)[:N_CLASSES]
            size = out.close()
        except BaseException:
            out.abort()
            raise
        row = {"rows": rows, "per_class": per_class.tolist(), "bytes": size,
               "file": os.path.basename(out.path) if size else None}  # fmt: skip
        yield pa.RecordBatch.from_pylist([row])


def _raise_task_errors(rows) -> None:
    for r in rows:
        if r["error"]:
            raise BadInputError(r["error_file"] or "?", r["error"])


def _fit(files, particle_scaling: str, scaler_fit: str, url: str) -> Scaler:
    """Fit statistics over the flagged rows of every file; validates every row of those files."""
    rows = files.mapInArrow(StatsTask(particle_scaling == "global"), _STATS_SCHEMA).collect()
    _raise_task_errors(rows)
    total = FitStats()
    for r in rows:
        total = total.merge(FitStats.from_row(r.asDict()))
    if total.events == 0:
        raise BadInputError(
            url, f"no events to fit the scalers on (--scaler-fit {scaler_fit}); too few events"
        )
    return Scaler.fit(total, particle_scaling, scaler_fit)


def _dir_summary(directory: str, per_class: dict[int, int]) -> dict:
    files = (
        sorted(f for f in os.listdir(directory) if f.endswith(".parquet")) if os.path.isdir(directory) else []
    )
    return {
        "events": int(sum(per_class.values())),
        "per_class": {str(k): int(per_class.get(k, 0)) for k in range(N_CLASSES)},
        "files": files,
        "bytes": int(sum(os.path.getsize(os.path.join(directory, f)) for f in files)),
    }


def run(
    input_url: str,
    output: str,
    *,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    scaler_fit: str = "train",
    particle_scaling: str = "global",
    shuffle_partitions: int | None = None,
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
) -> dict:
    """Prepare the training and test sets from an ingestion output into `output`; returns metrics."""
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be strictly between 0 and 1, got {test_fraction}")
    if scaler_fit not in SCALER_FITS:
        raise UsageError(f"--scaler-fit: choose {' or '.join(SCALER_FITS)}, got {scaler_fit!r}")
    if particle_scaling not in PARTICLE_SCALINGS:
        raise UsageError(
            f"--particle-scaling: choose {' or '.join(PARTICLE_SCALINGS)}, got {particle_scaling!r}"
        )
    if shuffle_partitions is not None and shuffle_partitions < 1:
        raise UsageError(f"--shuffle-partitions must be >= 1, got {shuffle_partitions}")
    t0 = time.perf_counter()
    own_spark = spark is None
    conf = dict(spark_conf or {})
    if shuffle_partitions:
        conf.setdefault("spark.sql.shuffle.partitions", str(shuffle_partitions))
    if own_spark:
        spark = spark_session("colliderflow-prepare", master, event_log_dir, conf)
    session_conf = {k: conf.get(k, v) for k, v in BATCH_CONF.items()}  # --spark-conf may override
    if shuffle_partitions:
        session_conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    saved = {k: spark.conf.get(k, None) for k in session_conf}
    try:
        for k, v in session_conf.items():
            spark.conf.set(k, v)
        from pyspark.sql import functions as F

        raw = _read_input(spark, input_url)
        counts = _class_counts(raw, input_url)
        n_min = min(counts.values())
        kept = _with_split(_undersample(raw, counts, seed), seed, test_fraction)
        kept = kept.withColumn("_shuffle_key", _event_hash(seed, "shuffle")).withColumn(
            "_fit", ~F.col("_is_test")
        )
        split_counts = {(r["label"], r["_is_test"]): int(r["count"])
                        for r in kept.groupBy("label", "_is_test").count().collect()}  # fmt: skip
        for name, is_test in (("train", False), ("test", True)):
            if not any(split_counts.get((k, is_test)) for k in range(N_CLASSES)):
                raise BadInputError(
                    input_url,
                    f"the {name} split is empty after undersampling to {n_min} events per class; "
                    "more events (or another --test-fraction) are needed",
                )
        files = _files_with_rows(kept, "_fit")
        if scaler_fit == "all":
            every = raw.withColumn("_is_test", F.lit(False)).withColumn("_shuffle_key", F.lit(0).cast("long"))
            fit_files = _files_with_rows(every.withColumn("_fit", F.lit(True)), "_fit")
        else:
            fit_files = files
        scaler = _fit(fit_files, particle_scaling, scaler_fit, input_url)
        n_parts = shuffle_partitions or max(
            1, math.ceil(N_CLASSES * n_min * (1 - test_fraction) / ROWS_PER_PARTITION)
        )
        with atomic_output_dir(output) as staging:
            train_dir, test_dir = os.path.join(staging, "train"), os.path.join(staging, "test")
            os.makedirs(train_dir)
            os.makedirs(test_dir)
            shuffled = (
                files.mapInArrow(TransformTask(test_dir, scaler), _SHUFFLE_SCHEMA)
                .repartition(n_parts, "key")
                .sortWithinPartitions("key")
            )
            written = shuffled.mapInArrow(TrainWriteTask(train_dir), _WRITE_SCHEMA).collect()
            train_per_class = np.sum([r["per_class"] for r in written], axis=0)
            splits = {
                "train": _dir_summary(train_dir, dict(enumerate(train_per_class.tolist()))),
                "test": _dir_summary(test_dir, {k: split_counts.get((k, True), 0) for k in range(N_CLASSES)}),
            }
            after = {k: splits["train"]["per_class"][str(k)] + splits["test"]["per_class"][str(k)]
                     for k in range(N_CLASSES)}  # fmt: skip
            if any(v != n_min for v in after.values()) or splits["train"]["events"] != sum(
                split_counts.get((k, False), 0) for k in range(N_CLASSES)
            ):
                raise RuntimeError(f"undersampling kept {after}, expected {n_min} per class")
            info = spark_info(spark)
            wall = time.perf_counter() - t0
            summary = {
                "input": input_url,
                "classes": {str(k): CLASS_NAMES[k] for k in range(N_CLASSES)},
                "per_class_before": {str(k): v for k, v in counts.items()},
                "per_class_after": {str(k): v for k, v in after.items()},
                "events_per_class": n_min,
                "splits": splits,
                "options": {
                    "seed": seed,
                    "test_fraction": test_fraction,
                    "scaler_fit": scaler_fit,
                    "particle_scaling": particle_scaling,
                    "shuffle_partitions": n_parts,
                },
                "scaler": "scaler.json",
            }
            write_json(os.path.join(staging, "scaler.json"), scaler.to_json())
            write_json(os.path.join(staging, "summary.json"), summary)
            events_in = sum(counts.values())
            metrics = job_metrics(
                stage="prepare",
                events=events_in,
                wall_seconds=wall,
                io={},
                skipped={},
                spark={**info, "shuffle_partitions": n_parts},
                events_written=3 * n_min,
                bytes_written=sum(s["bytes"] for s in splits.values()),
            )
            write_json(os.path.join(staging, "metrics.json"), metrics)
    finally:
        if own_spark:
            spark.stop()
        else:
            for k, v in saved.items():
                if v is None:
                    spark.conf.unset(k)
                else:
                    spark.conf.set(k, v)
    log.info(
        "prepare: %d events in, %d per class kept, train %d / test %d, %.1f s -> %s",
        sum(counts.values()), n_min, splits["train"]["events"], splits["test"]["events"], wall, output,
    )  # fmt: skip
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="the jobs.ingest output directory (label=K/ Parquet)")
    parser.add_argument("--output", required=True, help="output directory (replaced atomically)")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of undersampling, split, shuffle"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, help="share of the test split"
    )
    parser.add_argument(
        "--scaler-fit",
        choices=SCALER_FITS,
        default="train",
        help="fit the scalers on the training split (default) or on every ingested event (the reference)",
    )
    parser.add_argument(
        "--particle-scaling",
        choices=PARTICLE_SCALINGS,
        default="global",
        help="global: training-set statistics, padding stays 0 (default); per-event: the reference, "
        "which makes padding non-zero and defeats Masking",
    )
    parser.add_argument(
        "--shuffle-partitions",
        type=int,
        default=None,
        help=f"spark.sql.shuffle.partitions and number of training files (default: one per "
        f"{ROWS_PER_PARTITION} training events)",
    )
    cli.add_spark_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(
        args.input,
        args.output,
        seed=args.seed,
        test_fraction=args.test_fraction,
        scaler_fit=args.scaler_fit,
        particle_scaling=args.particle_scaling,
        shuffle_partitions=args.shuffle_partitions,
        **cli.spark_kwargs(args),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
