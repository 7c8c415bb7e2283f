"""DL-trigger feature preparation: the ingestion Parquet -> balanced, scaled training and test sets.

    python -m jobs.prepare --input DIR --output DIR [--seed 42] [--test-fraction 0.2]
        [--scaler-fit train|all] [--particle-scaling global|per-event] [--shuffle-partitions N]

A Spark job; the dataset never goes to the driver. Per event it is decided with seeded 64-bit hashes
of (source_file, entry) — independent of partitioning, file order and retries — whether it survives
the undersampling (the n_min lowest hashes of each class are kept: exact class counts), whether it
goes to the test split, and where it lands in the shuffled training set. Spark does the narrow work
(counts, the per-class rank on hashes, the training-set shuffle); the numpy work (ΔR ordering,
scaling, Parquet encoding) runs in Arrow batches inside the tasks (mapInArrow), which write their
Parquet files themselves into the job's staging directory and hand only counts back to the driver.
Outputs (DIR/train/, DIR/test/, scaler.json, summary.json, metrics.json) appear atomically.
Semantics and options: docs/dl-trigger-preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
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
_FILE = "_file"  # the Parquet file a row came from (Spark's _metadata.file_path), for error messages

_STATS_SCHEMA = (
    "events long, hlf_min array<double>, hlf_max array<double>, rows long, mean array<double>, "
    "m2 array<double>, error string, error_file string"
)
_WRITE_SCHEMA = "rows long, per_class array<long>, bytes long, file string, error string, error_file string"


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
    return df.withColumn(_FILE, F.col("_metadata.file_path"))


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


def _batch_arrays(batch: pa.RecordBatch, with_particles: bool) -> tuple[np.ndarray, np.ndarray | None]:
    hlf = nested_to_numpy(batch.column("hfeatures"), (N_HLF,))
    particles = (
        nested_to_numpy(batch.column("particles"), (N_PARTICLES, N_PARTICLE_FEATURES))
        if with_particles
        else None
    )
    return hlf, particles


def _first_file(batch: pa.RecordBatch) -> str:
    return str(batch.column(_FILE)[0].as_py()) if batch.num_rows else "?"


@dataclass(frozen=True)
class StatsTask:
    """mapInArrow function: the fit statistics of a partition (one row), or the first shape error."""

    with_particles: bool

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = FitStats()
        for batch in batches:
            try:
                total = total.merge(FitStats.of(*_batch_arrays(batch, self.with_particles)))
            except ShapeError as exc:
                yield pa.RecordBatch.from_pylist(
                    [{**FitStats().to_row(), "error": str(exc), "error_file": _first_file(batch)}]
                )
                return
        yield pa.RecordBatch.from_pylist([{**total.to_row(), "error": None, "error_file": None}])


@dataclass(frozen=True)
class WriteTask:
    """mapInArrow function: transform a partition's events with the fitted scaler and write them as
    `directory/part-<partition>.parquet` (temporary name, then rename, so a retried task replaces its
    own file instead of adding a second one). Returns one row of counts."""

    directory: str
    scaler: Scaler

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx else 0
        path = os.path.join(self.directory, f"part-{part:05d}.parquet")
        tmp = os.path.join(self.directory, f".part-{part:05d}.parquet.tmp-{os.getpid()}")
        writer = None
        rows, per_class = 0, np.zeros(N_CLASSES, dtype=np.int64)
        try:
            for batch in batches:
                if not batch.num_rows:
                    continue
                try:
                    hlf, particles = _batch_arrays(batch, True)
                except ShapeError as exc:
                    if writer is not None:
                        writer.close()
                        writer = None
                    yield self._row(0, per_class, 0, None, str(exc), _first_file(batch))
                    return
                labels = batch.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
                out = self.scaler.transform(hlf, particles, labels)
                table = pa.table(
                    {
                        HLF_COLUMN: numpy_to_nested(out[HLF_COLUMN]),
                        GRU_COLUMN: numpy_to_nested(out[GRU_COLUMN]),
                        LABEL_COLUMN: numpy_to_nested(out[LABEL_COLUMN]),
                        COUNT_COLUMN: pa.array(out[COUNT_COLUMN]),
                        "source_file": batch.column("source_file"),
                        "entry": batch.column("entry").cast(pa.int64()),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression=PARQUET_COMPRESSION)
                writer.write_table(table)
                rows += batch.num_rows
                per_class += np.bincount(labels, minlength=N_CLASSES)[:N_CLASSES]
            if writer is None:
                yield self._row(0, per_class, 0, None, None, None)
                return
            writer.close()
            writer = None
            os.replace(tmp, path)
            yield self._row(rows, per_class, os.path.getsize(path), os.path.basename(path), None, None)
        finally:
            if writer is not None:
                writer.close()
            if os.path.exists(tmp):
                os.remove(tmp)

    @staticmethod
    def _row(rows, per_class, nbytes, file, error, error_file) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(
            [
                {
                    "rows": int(rows),
                    "per_class": [int(x) for x in per_class],
                    "bytes": int(nbytes),
                    "file": file,
                    "error": error,
                    "error_file": error_file,
                }
            ]
        )


def _raise_task_errors(rows) -> None:
    for r in rows:
        if r["error"]:
            raise BadInputError(r["error_file"] or "?", r["error"])


def _fit(fit_df, particle_scaling: str, scaler_fit: str, url: str) -> Scaler:
    with_particles = particle_scaling == "global"
    columns = ["hfeatures", _FILE] + (["particles"] if with_particles else [])
    rows = fit_df.select(*columns).mapInArrow(StatsTask(with_particles), _STATS_SCHEMA).collect()
    _raise_task_errors(rows)
    total = FitStats()
    for r in rows:
        total = total.merge(FitStats.from_row(r.asDict()))
    if total.events == 0:
        raise BadInputError(
            url, f"no events to fit the scalers on (--scaler-fit {scaler_fit}); too few events"
        )
    return Scaler.fit(total, particle_scaling, scaler_fit)


def _write(df, directory: str, scaler: Scaler) -> dict:
    os.makedirs(directory, exist_ok=True)
    columns = ["hfeatures", "particles", "label", "source_file", "entry", _FILE]
    rows = df.select(*columns).mapInArrow(WriteTask(directory, scaler), _WRITE_SCHEMA).collect()
    _raise_task_errors(rows)
    per_class = np.sum([r["per_class"] for r in rows], axis=0).astype(int) if rows else np.zeros(N_CLASSES)
    return {
        "events": int(sum(r["rows"] for r in rows)),
        "per_class": {str(k): int(per_class[k]) for k in range(N_CLASSES)},
        "files": sorted(r["file"] for r in rows if r["file"]),
        "bytes": int(sum(r["bytes"] for r in rows)),
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
        raw = _read_input(spark, input_url)
        counts = _class_counts(raw, input_url)
        n_min = min(counts.values())
        kept = _with_split(_undersample(raw, counts, seed), seed, test_fraction)
        train = kept.where(~kept["_is_test"])
        fit_df = train if scaler_fit == "train" else raw
        scaler = _fit(fit_df, particle_scaling, scaler_fit, input_url)
        n_parts = shuffle_partitions or max(
            1, math.ceil(N_CLASSES * n_min * (1 - test_fraction) / ROWS_PER_PARTITION)
        )
        shuffled = train.withColumn("_shuffle_key", _event_hash(seed, "shuffle"))
        shuffled = shuffled.repartition(n_parts, "_shuffle_key").sortWithinPartitions("_shuffle_key")
        with atomic_output_dir(output) as staging:
            splits = {
                "train": _write(shuffled, os.path.join(staging, "train"), scaler),
                "test": _write(kept.where(kept["_is_test"]), os.path.join(staging, "test"), scaler),
            }
            for name, s in splits.items():
                if s["events"] == 0:
                    raise BadInputError(
                        input_url,
                        f"the {name} split is empty after undersampling to {n_min} events per class; "
                        "more events (or another --test-fraction) are needed",
                    )
            after = {k: splits["train"]["per_class"][str(k)] + splits["test"]["per_class"][str(k)]
                     for k in range(N_CLASSES)}  # fmt: skip
            if any(v != n_min for v in after.values()):
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
        master=args.master,
        event_log_dir=args.event_log_dir,
        spark_conf=cli.parse_kv(args.spark_conf, "--spark-conf"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
