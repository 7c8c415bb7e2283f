"""DL-trigger feature preparation: the ingestion Parquet -> balanced, scaled training and test sets.

    python -m jobs.prepare --input DIR --output DIR [--seed 42] [--test-fraction 0.2]
        [--scaler-fit train|all] [--particle-scaling global|per-event] [--shuffle-partitions N]

A Spark job; the dataset never goes to the driver. Per event it is decided with seeded 64-bit hashes
of (source_file, entry) — independent of partitioning, file order and retries — whether it survives
the undersampling (the n_min lowest hashes of each class are kept: exact class counts), whether it
goes to the test split, and where it lands in the shuffled training set. Spark SQL does this narrow
work on (label, source_file, entry, file, row index) only (jobs.prepare.sampling). The particle lists
never go through Spark's row format: tasks read the Parquet files themselves with pyarrow (one task
per file, told which rows to take), do the numpy work (ΔR ordering, scaling: jobs.prepare.scaling)
array-at-a-time, write the test events directly and hand the training events to Spark's shuffle as
packed float32 bytes, which a last mapInArrow stage unpacks and writes in shuffled order
(jobs.prepare.tasks). Only counts come back to the driver. This module plans the stages and commits
the outputs (DIR/train/, DIR/test/ and the sidecars _scaler.json, _summary.json, _metrics.json, which
Parquet readers skip), which appear atomically.
Semantics and options: docs/dl-trigger-preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Sequence

import numpy as np

from jobs.core import cli
from jobs.core.errors import BadInputError, UsageError
from jobs.core.job_metrics import job_metrics
from jobs.core.spark import spark_info, spark_session
from jobs.core.storage import METRICS_FILE, SUMMARY_FILE, atomic_output_dir, check_writable, write_json
from jobs.dltrigger_schema import CLASS_TITLES, N_CLASSES, SCALER_FILE
from jobs.prepare.sampling import (
    class_counts,
    every_event,
    files_with_rows,
    kept_events,
    read_input,
    split_counts,
)
from jobs.prepare.scaling import PARTICLE_SCALINGS, SCALER_FITS, FitStats, Scaler
from jobs.prepare.tasks import (
    ARROW_BATCH_ROWS,
    PARQUET_COMPRESSION,  # noqa: F401  (re-exported for bench.prepare)
    SHUFFLE_SCHEMA,
    STATS_SCHEMA,
    WRITE_SCHEMA,
    StatsTask,
    TrainWriteTask,
    TransformTask,
)

log = logging.getLogger("jobs.prepare")

SPLITS = ("train", "test")
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.2
ROWS_PER_PARTITION = 10_000  # training events per shuffle partition (= output file) when not given
# Row batches small enough for 801 x 19 floats per row: Spark's vectorized Parquet reader allocates
# one contiguous vector per batch (its default of 4096 rows asks for ~250 MB per column and task and
# runs the JVM out of heap), and Arrow batches to Python of the same size.
BATCH_CONF = {
    "spark.sql.parquet.columnarReaderBatchSize": str(ARROW_BATCH_ROWS),
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
}


def _raise_task_errors(rows) -> None:
    for r in rows:
        if r["error"]:
            raise BadInputError(r["error_file"] or "?", r["error"])


def _fit(files, particle_scaling: str, scaler_fit: str, url: str) -> Scaler:
    """Fit statistics over the flagged rows of every file; validates every row of those files."""
    rows = files.mapInArrow(StatsTask(particle_scaling == "global"), STATS_SCHEMA).collect()
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
    check_writable(output)
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
        raw = read_input(spark, input_url)
        counts = class_counts(raw, input_url)
        n_min = min(counts.values())
        kept = kept_events(raw, counts, seed, test_fraction)
        per_split = split_counts(kept)
        for name, is_test in (("train", False), ("test", True)):
            if not any(per_split.get((k, is_test)) for k in range(N_CLASSES)):
                raise BadInputError(
                    input_url,
                    f"the {name} split is empty after undersampling to {n_min} events per class; "
                    "more events (or another --test-fraction) are needed",
                )
        files = files_with_rows(kept)
        fit_files = files_with_rows(every_event(raw)) if scaler_fit == "all" else files
        scaler = _fit(fit_files, particle_scaling, scaler_fit, input_url)
        n_parts = shuffle_partitions or max(
            1, math.ceil(N_CLASSES * n_min * (1 - test_fraction) / ROWS_PER_PARTITION)
        )
        with atomic_output_dir(output) as staging:
            train_dir, test_dir = os.path.join(staging, "train"), os.path.join(staging, "test")
            os.makedirs(train_dir)
            os.makedirs(test_dir)
            shuffled = (
                files.mapInArrow(TransformTask(test_dir, scaler), SHUFFLE_SCHEMA)
                .repartition(n_parts, "key")
                .sortWithinPartitions("key")
            )
            written = shuffled.mapInArrow(TrainWriteTask(train_dir), WRITE_SCHEMA).collect()
            train_per_class = np.sum([r["per_class"] for r in written], axis=0)
            splits = {
                "train": _dir_summary(train_dir, dict(enumerate(train_per_class.tolist()))),
                "test": _dir_summary(test_dir, {k: per_split.get((k, True), 0) for k in range(N_CLASSES)}),
            }
            after = {k: splits["train"]["per_class"][str(k)] + splits["test"]["per_class"][str(k)]
                     for k in range(N_CLASSES)}  # fmt: skip
            if any(v != n_min for v in after.values()) or splits["train"]["events"] != sum(
                per_split.get((k, False), 0) for k in range(N_CLASSES)
            ):
                raise RuntimeError(f"undersampling kept {after}, expected {n_min} per class")
            info = spark_info(spark)
            wall = time.perf_counter() - t0
            summary = {
                "input": input_url,
                "classes": {str(k): CLASS_TITLES[k] for k in range(N_CLASSES)},
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
                "scaler": SCALER_FILE,
            }
            write_json(os.path.join(staging, SCALER_FILE), scaler.to_json())
            write_json(os.path.join(staging, SUMMARY_FILE), summary)
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
            write_json(os.path.join(staging, METRICS_FILE), metrics)
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
    parser = cli.new_parser(
        "prepare",
        __doc__.splitlines()[0],
        "python -m jobs.prepare --input out/features --output out/prepared --seed 42",
    )
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
