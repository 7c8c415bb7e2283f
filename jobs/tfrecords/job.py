"""Prepared Parquet sets -> TFRecord shards of tf.train.Example (HLF_input [14], GRU_input row-major,
encoded_label [3], n_particles), for tf.data input pipelines.

    python -m jobs.tfrecords --input DIR --output DIR [--compression gzip|none]

DIR is a jobs.prepare output: its train/ and test/ Parquet sets become DIR_OUT/train/ and
DIR_OUT/test/ shards, in the input's particle layout (jobs.dltrigger_schema: GRU_input holds 801*19
floats when padded, n_particles*19 when ragged; recorded in _summary.json). One Spark task (= one
partition) per Parquet file, so one shard per file,
records in the file's row order (the training set's shuffle survives). There is no TFRecord
connector for Spark 4, so the tasks encode the protos themselves (jobs.tfrecords.example): neither the
driver nor the tasks import TensorFlow. Shaped for a cluster without a shared disk, on any store the
storage layer reads: the driver plans (file list, footers checked in parallel) and commits; each task
reads its Parquet file with pyarrow through fsspec and writes its shard straight into the output
location, visible only when complete; the output is complete when _SUCCESS appears
(jobs.core.commit.atomic_output_dir). Read it back with jobs.core.tf_readers.read_tfrecords.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from jobs.core import cli
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.engine import choose_engine, executor_kwargs, run_map_reduce
from jobs.core.errors import BadInputError, UsageError
from jobs.core.finite import check_finite
from jobs.core.job_metrics import job_metrics
from jobs.core.metering import IOStats, merge_io
from jobs.core.storage import (
    METRICS_FILE,
    SUMMARY_FILE,
    check_complete,
    check_regular_files,
    filesystem,
    write_json,
)
from jobs.core.store_probe import check_input_dir
from jobs.core.tensors import ShapeError, nested_to_numpy, ragged_to_rows
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    FEATURE_NAMES,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    LAYOUT_SUMMARY_KEY,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    SCALER_FILE,
    SHAPES,
    layout_of,
)
from jobs.tfrecords.example import ShardWriter, encode_examples

log = logging.getLogger("jobs.tfrecords")

SPLITS = ("train", "test")
COMPRESSIONS = ("gzip", "none")
COLUMNS = (*SHAPES, COUNT_COLUMN)
BATCH_ROWS = 512  # events encoded at a time: ~31 MB of particles


FOOTER_THREADS = 32


@dataclass(frozen=True)
class ShardTask:
    """One Parquet file of a split and the shard it becomes (a local path or object-store URL)."""

    split: str
    source: str
    target: str


@dataclass
class ShardResult:
    """Per-split records, shards, bytes (mergeable by addition), input I/O and bad files."""

    records: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    bytes_written: dict[str, int] = field(default_factory=dict)
    raw_bytes: dict[str, int] = field(default_factory=dict)
    io: dict[str, IOStats] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    task_seconds: float = 0.0

    def __add__(self, other: ShardResult) -> ShardResult:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}

        return ShardResult(
            add(self.records, other.records),
            add(self.shards, other.shards),
            add(self.bytes_written, other.bytes_written),
            add(self.raw_bytes, other.raw_bytes),
            merge_io(self.io, other.io),
            {**self.bad, **other.bad},
            self.task_seconds + other.task_seconds,
        )


def _merge(a: ShardResult, b: ShardResult) -> ShardResult:
    return a + b


def convert_file(task: ShardTask, compression: str) -> ShardResult:
    """Inside a Spark task: stream one Parquet file into one TFRecord shard, batch by batch."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    stats = IOStats(task.source)
    fs, path = filesystem(task.source)
    writer = ShardWriter(task.target, compression=compression)
    try:
        with fs.open(path, "rb") as handle:
            pf = pq.ParquetFile(handle)
            ragged = layout_of(pf.schema_arrow) == "ragged"
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(COLUMNS)):
                hlf, label = (nested_to_numpy(batch.column(c), SHAPES[c]) for c in (HLF_COLUMN, LABEL_COLUMN))
                counts = batch.column(COUNT_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
                if ragged:
                    gru, lengths = ragged_to_rows(batch.column(GRU_COLUMN), N_PARTICLE_FEATURES, N_PARTICLES)
                else:
                    gru, lengths = nested_to_numpy(batch.column(GRU_COLUMN), SHAPES[GRU_COLUMN]), None
                check_finite(
                    task.source, {HLF_COLUMN: hlf, GRU_COLUMN: gru, LABEL_COLUMN: label}, FEATURE_NAMES
                )
                writer.write_all(encode_examples(hlf, gru, label, counts, gru_lengths=lengths))
        stats.record(fs.size(path), time.perf_counter() - t0)  # one streamed read of the whole file
        size = writer.close()
    except BadInputError as exc:
        writer.abort()
        return ShardResult(io={task.source: stats}, bad={task.source: exc.problem})
    except (ShapeError, OSError, ValueError) as exc:
        writer.abort()
        if isinstance(exc, OSError) and exc.errno in cli.DISK_FULL:
            raise  # the machine's fault, not the input's: exit 1 (jobs.core.cli)
        return ShardResult(io={task.source: stats}, bad={task.source: str(exc)})
    except BaseException:
        writer.abort()
        raise
    return ShardResult(
        {task.split: writer.records},
        {task.split: 1},
        {task.split: size},
        {task.split: writer.raw_bytes},
        {task.source: stats},
        {},
        time.perf_counter() - t0,
    )


def _schema(fs, path: str):
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow


def plan(input_url: str, compression: str) -> tuple[list[ShardTask], str]:
    """The shard tasks, with targets relative to the output (`split/part-k.tfrecord[.gz]`): every
    part file of every split present, checked for the contract's columns on the driver (footers
    only, read in parallel), in sorted order so shard k is file k; and the set's particle layout
    (every file must agree)."""
    check_input_dir(input_url, "--input", "a jobs.prepare output")
    fs, root = filesystem(input_url)
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    tasks: list[ShardTask] = []
    for split in SPLITS:
        split_dir = f"{root.rstrip('/')}/{split}"
        if not fs.isdir(split_dir):
            continue
        files = sorted(
            p
            for p in fs.find(split_dir)
            if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))
        )
        check_regular_files(files if "://" not in input_url else [])
        for i, p in enumerate(files):
            url = p if "://" not in input_url else fs.unstrip_protocol(p)
            tasks.append(ShardTask(split, url, f"{split}/part-{i:05d}{suffix}"))
    if not tasks:
        raise BadInputError(input_url, f"holds no Parquet file under {' or '.join(s + '/' for s in SPLITS)}")
    check_complete(input_url, required=True)
    paths = [filesystem(t.source)[1] for t in tasks]
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(tasks))) as pool:
        schemas = list(pool.map(lambda p: _schema(fs, p), paths))
    for task, schema in zip(tasks, schemas, strict=True):
        missing = [c for c in COLUMNS if c not in schema.names]
        if missing:
            raise BadInputError(
                task.source, f"lacks column(s) {', '.join(missing)} of the prepared-set contract"
            )
    layouts = [layout_of(s) for s in schemas]
    for task, layout in zip(tasks, layouts, strict=True):
        if layout != layouts[0]:
            raise BadInputError(
                task.source, f"particle layout {layout} differs from {layouts[0]} of {tasks[0].source}"
            )
    return tasks, layouts[0]


def run(
    input_url: str,
    output: str,
    *,
    compression: str = "gzip",
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    engine: str = "auto",
) -> dict:
    """Convert every split of a prepared set into TFRecord shards under `output`; returns metrics. The
    tasks run where `engine` says (jobs.core.engine): worker processes or Spark, same shards."""
    if compression not in COMPRESSIONS:
        raise UsageError(f"--compression: choose {' or '.join(COMPRESSIONS)}, got {compression!r}")
    if spark is None:
        choose_engine(engine, master, event_log_dir)  # a wrong combination fails before any work
    claim_output(output, [input_url])
    t0 = time.perf_counter()
    planned, layout = plan(input_url, compression)
    with atomic_output_dir(output, shared=True) as out:  # executors write their shards into it
        tasks = [ShardTask(t.split, t.source, f"{out}/{t.target}") for t in planned]
        total, info = run_map_reduce(
            engine,
            "colliderflow-tfrecords",
            tasks,
            functools.partial(convert_file, compression=compression),
            _merge,
            spark=spark,
            master=master,
            event_log_dir=event_log_dir,
            spark_conf=spark_conf,
        )
        if total.bad:
            url = sorted(total.bad)[0]
            raise BadInputError(url, total.bad[url])
        fs, root = filesystem(input_url)
        scaler = f"{root.rstrip('/')}/{SCALER_FILE}"
        if fs.isfile(scaler):  # evaluation needs it beside the shards too
            out_fs, out_path = filesystem(f"{out}/{SCALER_FILE}")
            out_fs.pipe_file(out_path, fs.cat_file(scaler))
        wall = time.perf_counter() - t0
        summary = {
            "input": input_url,
            "compression": compression,
            LAYOUT_SUMMARY_KEY: layout,
            "splits": {
                s: {
                    "records": total.records.get(s, 0),
                    "shards": total.shards.get(s, 0),
                    "bytes": total.bytes_written.get(s, 0),
                    "uncompressed_bytes": total.raw_bytes.get(s, 0),
                }
                for s in SPLITS
                if s in total.shards
            },
        }
        records = sum(total.records.values())
        written = sum(total.bytes_written.values())
        metrics = job_metrics(
            stage="tfrecords",
            events=records,
            wall_seconds=wall,
            io=total.io,
            skipped={},
            spark={**info, "tasks": len(tasks)},
            task_seconds=total.task_seconds,
            bytes_written=written,
            mb_written_per_second=written / 1e6 / wall if wall > 0 else None,
            compression=compression,
            particle_layout=layout,
        )
        write_json(f"{out}/{SUMMARY_FILE}", summary)
        write_json(f"{out}/{METRICS_FILE}", metrics)
    log.info(
        "tfrecords: %d records in %d shards, %.1f MB, %.1f s -> %s",
        records,
        len(tasks),
        written / 1e6,
        wall,
        output,
    )
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(
        "tfrecords",
        __doc__.splitlines()[0],
        "python -m jobs.tfrecords --input out/prepared --output out/tfrecords",
    )
    parser.add_argument("--input", required=True, help="a jobs.prepare output directory (train/, test/)")
    parser.add_argument("--output", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="gzip", help="shard compression")
    cli.add_executor_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(
        args.input,
        args.output,
        compression=args.compression,
        **executor_kwargs(args),
    )
    return 0
