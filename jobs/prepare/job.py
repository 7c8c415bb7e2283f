"""DL-trigger feature preparation: the ingestion Parquet -> balanced, scaled training and test sets.

    python -m jobs.prepare --input DIR --output DIR [--seed 42] [--test-fraction 0.2]
        [--scaler-fit train|all] [--particle-scaling global|per-event] [--shuffle-partitions N]
        [--layout auto|ragged|padded]

A Spark job shaped for a cluster without a shared disk, on any store the storage layer reads
(local, s3://, ...): the driver only plans (the file list and the row counts from the Parquet
footers, read in parallel: jobs.prepare.inputs) and commits; every byte of data is read and written
inside the tasks, one task per input file, with pyarrow through fsspec (no Hadoop filesystem).
Per event it is decided with seeded hashes of the event's identity (class, source file name, entry),
never of where the data lives, whether it survives the undersampling (exactly the n_min lowest keys
of each class, the threshold found from distributed key histograms), whether it goes to the test
split and where it lands in the shuffled training set (jobs.prepare.sampling). The tasks do the numpy
work (ΔR ordering, scaling: jobs.prepare.scaling) array-at-a-time, write the test events straight
into the output and hand the training events to Spark's shuffle as packed float32 bytes, which a
last mapInArrow stage writes in shuffled order into the output (jobs.prepare.tasks). Only counts
come back to the driver. The output (DIR/train/, DIR/test/ and the sidecars _scaler.json,
_summary.json, _metrics.json, which Parquet readers skip) is complete when _SUCCESS appears
(jobs.core.commit.atomic_output_dir). Semantics and options: docs/dl-trigger-preparation.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import operator
import time
from collections.abc import Sequence

import numpy as np

from jobs.core import cli
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.engine import choose_engine, executor_kwargs, open_executor
from jobs.core.errors import BadInputError, UsageError
from jobs.core.job_metrics import job_metrics
from jobs.core.partitions import result_outputs
from jobs.core.storage import METRICS_FILE, SUMMARY_FILE, filesystem, write_json
from jobs.dltrigger_schema import (
    CLASS_TITLES,
    LAYOUT_SUMMARY_KEY,
    N_CLASSES,
    PARTICLE_LAYOUTS,
    SCALER_FILE,
)
from jobs.prepare.inputs import InputFile, class_counts, list_all
from jobs.prepare.sampling import Plan, thresholds
from jobs.prepare.scaling import PARTICLE_SCALINGS, SCALER_FITS, Scaler
from jobs.prepare.tasks import (
    ARROW_BATCH_ROWS,
    PARQUET_COMPRESSION,  # noqa: F401  (re-exported for bench.prepare)
    SHUFFLE_KEY,
    SHUFFLE_SCHEMA,
    FitResult,
    FitTask,
    TrainWriter,
    TransformTask,
)

log = logging.getLogger("jobs.prepare")

SPLITS = ("train", "test")
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.2
ROWS_PER_PARTITION = 10_000  # training events per shuffle partition (= output file) when not given


def _fit(executor, files: list[InputFile], plan: Plan, particle_scaling: str, scaler_fit: str):
    """Fit statistics and kept events per split, in one pass over every file (which validates every
    row of the input); on one machine the kept events wait in the executor's scratch folder for the
    transform round (jobs.prepare.kept_rows)."""
    task = FitTask(plan, particle_scaling == "global", scaler_fit == "all", executor.scratch)
    result: FitResult = executor.map_reduce(files, task, operator.add, "fit")
    if result.error:
        raise BadInputError(*result.error)
    return result


LAYOUT_CHOICES = ("auto", *PARTICLE_LAYOUTS)


def resolve_layout(layout: str, particle_scaling: str) -> str:
    """The stored particle layout: auto = ragged under global scaling, padded under per-event scaling
    (whose padded rows are not zero, so only the padded layout keeps them); ragged with per-event
    scaling is refused."""
    if layout not in LAYOUT_CHOICES:
        raise UsageError(f"--layout: choose {', '.join(LAYOUT_CHOICES)}, got {layout!r}")
    if layout == "auto":
        return "ragged" if particle_scaling == "global" else "padded"
    if layout == "ragged" and particle_scaling != "global":
        raise UsageError(
            "--layout ragged needs --particle-scaling global (per-event scaling makes the padded rows "
            "non-zero, which only the padded layout stores); use --layout padded or auto"
        )
    return layout


def _dir_summary(url: str, per_class: dict[int, int]) -> dict:
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    found = fs.find(path, detail=True) if fs.isdir(path) else {}
    files = {p.rsplit("/", 1)[-1]: int(info["size"]) for p, info in found.items() if p.endswith(".parquet")}
    return {
        "events": int(sum(per_class.values())),
        "per_class": {str(k): int(per_class.get(k, 0)) for k in range(N_CLASSES)},
        "files": sorted(files),
        "bytes": int(sum(files.values())),
    }


def run(
    input_url: str | Sequence[str],
    output: str,
    *,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    scaler_fit: str = "train",
    particle_scaling: str = "global",
    shuffle_partitions: int | None = None,
    layout: str = "auto",
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    engine: str = "auto",
) -> dict:
    """Prepare the training and test sets from an ingestion output into `output`; returns metrics. The
    tasks run where `engine` says (jobs.core.engine): worker processes or Spark, same output."""
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be strictly between 0 and 1, got {test_fraction}")
    if scaler_fit not in SCALER_FITS:
        raise UsageError(f"--scaler-fit: choose {' or '.join(SCALER_FITS)}, got {scaler_fit!r}")
    if particle_scaling not in PARTICLE_SCALINGS:
        raise UsageError(
            f"--particle-scaling: choose {' or '.join(PARTICLE_SCALINGS)}, got {particle_scaling!r}"
        )
    cli.check_range(shuffle_partitions, "--shuffle-partitions", 1, cli.MAX_PARTITIONS)
    layout = resolve_layout(layout, particle_scaling)
    if spark is None:
        choose_engine(engine, master, event_log_dir)  # a wrong combination fails before any work
    inputs = [input_url] if isinstance(input_url, str) else list(input_url)
    if not inputs:
        raise UsageError("--input: give at least one jobs.ingest output")
    input_url = inputs[0] if len(inputs) == 1 else f"{inputs[0]} (and {len(inputs) - 1} more inputs)"
    claim_output(output, inputs)
    t0 = time.perf_counter()
    files = list_all(inputs)
    counts = class_counts(files, input_url)
    n_min = min(counts.values())
    conf = dict(spark_conf or {})
    if shuffle_partitions:
        conf.setdefault("spark.sql.shuffle.partitions", str(shuffle_partitions))
    todo = [f for f in files if f.rows]
    where = dict(spark=spark, master=master, event_log_dir=event_log_dir, spark_conf=conf)
    with open_executor(engine, "colliderflow-prepare", **where) as executor:
        plan = Plan(seed, test_fraction, thresholds(executor, files, counts, seed))
        fitted = _fit(executor, todo, plan, particle_scaling, scaler_fit)
        per_split = {(k, bool(t)): int(fitted.split[k, t]) for k in range(N_CLASSES) for t in (0, 1)}
        for name, is_test in (("train", False), ("test", True)):
            if not any(per_split[(k, is_test)] for k in range(N_CLASSES)):
                raise BadInputError(
                    input_url,
                    f"the {name} split is empty after undersampling to {n_min} events per class; "
                    "more events (or another --test-fraction) are needed",
                )
        if fitted.stats.events == 0:
            raise BadInputError(
                input_url, f"no events to fit the scalers on (--scaler-fit {scaler_fit}); too few events"
            )
        scaler = Scaler.fit(fitted.stats, particle_scaling, scaler_fit)
        scaler.check_finite(f"{input_url} (the fitted {SCALER_FILE})")
        n_parts = shuffle_partitions or max(
            1, math.ceil(N_CLASSES * n_min * (1 - test_fraction) / ROWS_PER_PARTITION)
        )
        with atomic_output_dir(output, shared=True) as out:  # executors write into it
            train_url, test_url = f"{out}/train", f"{out}/test"
            written = executor.sorted_shuffle(
                todo,
                TransformTask(test_url, plan, scaler, layout, executor.scratch),
                SHUFFLE_SCHEMA,
                SHUFFLE_KEY,
                n_parts,
                TrainWriter(train_url, layout),
                ARROW_BATCH_ROWS,
            )
            train_per_class = np.sum([r["per_class"] for r in written], axis=0)
            splits = {
                "train": _dir_summary(train_url, dict(enumerate(train_per_class.tolist()))),
                "test": _dir_summary(test_url, {k: per_split[(k, True)] for k in range(N_CLASSES)}),
            }
            after = {k: splits["train"]["per_class"][str(k)] + splits["test"]["per_class"][str(k)]
                     for k in range(N_CLASSES)}  # fmt: skip
            if any(v != n_min for v in after.values()) or splits["train"]["events"] != sum(
                per_split[(k, False)] for k in range(N_CLASSES)
            ):
                raise RuntimeError(f"undersampling kept {after}, expected {n_min} per class")
            info = executor.info()
            wall = time.perf_counter() - t0
            summary = {
                "input": inputs[0] if len(inputs) == 1 else inputs,
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
                    "layout": layout,
                },
                LAYOUT_SUMMARY_KEY: layout,
                "scaler": SCALER_FILE,
            }
            write_json(f"{out}/{SCALER_FILE}", scaler.to_json())
            write_json(f"{out}/{SUMMARY_FILE}", summary)
            metrics = job_metrics(
                stage="prepare",
                events=sum(counts.values()),
                wall_seconds=wall,
                io={},
                skipped={},
                spark={**info, "shuffle_partitions": n_parts, "input_files": len(files)},
                events_written=3 * n_min,
                bytes_written=sum(s["bytes"] for s in splits.values()),
            )
            write_json(f"{out}/{METRICS_FILE}", metrics)
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
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=[],
        help="the jobs.ingest output directory (label=K/ Parquet); several are read as one",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        help="a partition manifest of the source: read the features of its finished partitions",
    )
    parser.add_argument(
        "--window", type=int, default=0, help="with --manifest: only the last N finished partitions (0: all)"
    )
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
    parser.add_argument(
        "--layout",
        choices=LAYOUT_CHOICES,
        default="auto",
        help="how the particle list is stored: ragged (real rows only, padded at batch time), padded "
        "(the reference 801 x 19) or auto (default: ragged under global scaling, padded under per-event)",
    )
    cli.add_executor_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.manifest):
        parser.error("give --input or --manifest (one of them)")
    cli.check_range(args.window, "--window", 0, None)
    run(
        args.input or result_outputs(args.manifest[0], args.window),
        args.output,
        seed=args.seed,
        test_fraction=args.test_fraction,
        scaler_fit=args.scaler_fit,
        particle_scaling=args.particle_scaling,
        shuffle_partitions=args.shuffle_partitions,
        layout=args.layout,
        **executor_kwargs(args),
    )
    return 0
