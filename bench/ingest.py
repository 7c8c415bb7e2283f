"""Throughput of the DL-trigger ingestion (jobs.ingest) on >= 100 k generated Delphes events, beside the
per-event oracle measured in the same run and the reference's 17 events/s/core.

    python -m bench.ingest [--events 34000] [--master local[2]] [--scratch /tmp/bench-ingest] [--quick]

--events is per class (three classes); a second input of --small-events per class gives the marginal
rate and the memory at two sizes. Results: out/bench/ingest.json. Reported:
- job: events/s of the whole job on --engine (default `auto`, what a DAG run uses: worker processes
  for a local master; wall clock, start-up included) divided by the task slots, and events per task
  CPU-second (the per-core rate of the tasks themselves: read, compute, write; CPU time, so that other
  load on a shared machine does not count);
- spark: the same job on Spark (JVM start included), beside it, when --engine is not spark (not in
  --quick);
- in-process: one core, no Spark, read + compute + Parquet write of a sample of events (CPU time);
- oracle: bench/fixtures/delphes_oracle.py (plain Python, one event at a time) on a sample, one core,
  CPU time, reading excluded, so the ratio is a lower bound of the speed-up;
- the reference: 54.5 M events in 2 h 11 min on 400 cores = 17 events/s/core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import pyarrow.parquet as pq
import uproot

from bench.common import (
    MEMORY_METHOD,
    PeakRSS,
    add_common_args,
    bytes_under,
    marginal_rate,
    target,
    write_result,
)
from jobs.dltrigger_schema import CLASSES, SAMPLES, TREE
from jobs.generate.delphes import generate
from jobs.ingest import job as ingest
from jobs.ingest.features import BRANCHES, compute

REFERENCE_EVENTS_PER_S_PER_CORE = 54.47e6 / (2 * 3600 + 11 * 60) / 400  # ~17
TARGET_WALL_PER_CORE = 5000.0  # issue 14


def make_input(directory: str, events: int, files: int) -> dict[str, str]:
    """Generate (or reuse) `events` per class under `directory`."""
    marker = os.path.join(directory, "bench.json")
    spec = {"events": events, "files": files}
    if not (os.path.exists(marker) and json.load(open(marker)) == spec):
        t0 = time.perf_counter()
        generate(events=events, output=directory, files=files, seed=1)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(directory) for f in fs)
        print(f"generated 3 x {events} events ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
        with open(marker, "w") as f:
            json.dump(spec, f)
    return {name: os.path.join(directory, SAMPLES[name]) for name in CLASSES}


def first_file(directory: str) -> str:
    return os.path.join(directory, sorted(f for f in os.listdir(directory) if f.endswith(".root"))[0])


def in_process(inputs: dict[str, str], events: int) -> float:
    """Events/s of read + compute + Parquet write in this process (one core), `events` per class."""
    n, seconds = 0, 0.0
    # the job's writer settings (older checkouts, compared with this script: the settings then)
    parquet_options = getattr(ingest, "PARQUET_OPTIONS", {"compression": "zstd"})
    for directory in inputs.values():
        path = first_file(directory)
        with uproot.open(path) as f:  # JIT and first-use (imports) warm-up outside the clock
            ingest.to_table(compute(f[TREE].arrays(list(BRANCHES), entry_stop=10)), path, 0)
        t0 = time.process_time()
        with uproot.open(path) as f, pq.ParquetWriter(io.BytesIO(), ingest.SCHEMA, **parquet_options) as w:
            tree = f[TREE]
            for start in range(0, events, ingest.DEFAULT_BATCH_ENTRIES):
                stop = min(start + ingest.DEFAULT_BATCH_ENTRIES, events)
                arrays = tree.arrays(list(BRANCHES), entry_start=start, entry_stop=stop)
                w.write_table(ingest.to_table(compute(arrays), path, start))
                n += stop - start
        seconds += time.process_time() - t0
    return n / seconds


def oracle(inputs: dict[str, str], events: int) -> float:
    """Events/s of the per-event oracle (file reading excluded), `events` per class."""
    from bench.fixtures.delphes_oracle import events_as_dicts, oracle_event

    n, seconds = 0, 0.0
    for directory in inputs.values():
        with uproot.open(first_file(directory)) as f:
            arrays = f[TREE].arrays(list(BRANCHES), entry_stop=events)
        t0 = time.process_time()
        for event in events_as_dicts(arrays):
            oracle_event(event)
        seconds += time.process_time() - t0
        n += len(arrays)
    return n / seconds


def run_ingest(inputs: dict[str, str], output: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """One jobs.ingest run on `--engine` (spark: its own Spark session, JVM start included; processes:
    worker processes): (metrics, peak RSS)."""
    with PeakRSS() as peak:
        metrics = ingest.run(
            [f"{n}={u}" for n, u in inputs.items()],
            output,
            master=args.master,
            chunk_entries=args.chunk_entries,
            engine=args.engine,
        )
    return metrics, peak.as_dict()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events per class (3 classes; quick 2000)")
    parser.add_argument("--small-events", type=int, default=None, help="the small input (default events/10)")
    parser.add_argument("--files", type=int, default=4, help="files per class")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--engine", choices=["auto", "spark", "processes"], default="auto", help="where the tasks run"
    )
    parser.add_argument("--chunk-entries", type=int, default=ingest.DEFAULT_CHUNK_ENTRIES)
    parser.add_argument("--sample-events", type=int, default=3000, help="in-process events per class")
    parser.add_argument("--oracle-events", type=int, default=600, help="oracle events per class")
    parser.add_argument("--scratch", default="/tmp/bench-ingest")
    add_common_args(parser)
    args = parser.parse_args(argv)
    events = args.events or (2000 if args.quick else 34_000)
    small_events = args.small_events or max(events // 10, 100)
    if args.quick:
        args.sample_events, args.oracle_events = min(args.sample_events, 1000), min(args.oracle_events, 200)

    os.environ.setdefault("COLLIDERFLOW_SPARK_DRIVER_MEMORY", "2g")
    small_inputs = make_input(os.path.join(args.scratch, f"delphes-{small_events}"), small_events, args.files)
    inputs = make_input(os.path.join(args.scratch, f"delphes-{events}"), events, args.files)
    small_metrics, small_peak = run_ingest(small_inputs, os.path.join(args.scratch, "out-small"), args)
    metrics, large_peak = run_ingest(inputs, os.path.join(args.scratch, "out"), args)
    ran = metrics["spark"]  # Spark's parallelism, or the process engine's workers
    cores = ran.get("default_parallelism") or ran["workers"]
    job_per_core = metrics["events"] / metrics["wall_seconds"] / cores
    task_rate = metrics["events"] / metrics["task_cpu_seconds"]
    marginal = marginal_rate(
        (small_metrics["events"], small_metrics["wall_seconds"]),
        (metrics["events"], metrics["wall_seconds"]),
        cores,
    )
    spark = None
    if args.engine != "spark" and not args.quick:
        on_spark = argparse.Namespace(**{**vars(args), "engine": "spark"})
        spark_metrics, _ = run_ingest(inputs, os.path.join(args.scratch, "out-spark"), on_spark)
        slots = spark_metrics["spark"].get("default_parallelism") or cores
        spark = {
            "wall_seconds": spark_metrics["wall_seconds"],
            "wall_events_per_s_per_core": spark_metrics["events"] / spark_metrics["wall_seconds"] / slots,
        }
    single = in_process(inputs, min(args.sample_events, events))
    slow = oracle(inputs, min(args.oracle_events, events))
    result = {
        "events": metrics["events"],
        "events_written": metrics["events_written"],
        "cores": cores,
        "master": args.master,
        "engine": ran.get("engine", args.engine),
        "spark": spark,
        "wall_seconds": metrics["wall_seconds"],
        "wall_events_per_s_per_core": job_per_core,
        "job_events_per_s_per_core": job_per_core,
        "marginal_events_per_s_per_core": marginal,
        "task_events_per_s_per_core": task_rate,
        "in_process_events_per_s": single,
        "oracle_events_per_s": slow,
        "reference_events_per_s_per_core": REFERENCE_EVENTS_PER_S_PER_CORE,
        "bytes_read": metrics["bytes_read"],
        "bytes_written_per_event": bytes_under(os.path.join(args.scratch, "out"))
        / max(metrics["events_written"], 1),
        "small": {"events": small_metrics["events"], "wall_seconds": small_metrics["wall_seconds"]},
        "peak_rss_mb": {"small": small_peak, "large": large_peak},
        "memory_method": MEMORY_METHOD,
        "targets": {
            "wall_per_core": target(
                job_per_core,
                TARGET_WALL_PER_CORE,
                "events/s/core by wall clock, JVM start included, >= 5,000",
            )
        },
    }
    load = os.getloadavg()[0]
    print(f"ingestion of {metrics['events']} events ({metrics['events_written']} written) on {cores} cores:")
    engine = f"({result['engine']})"
    print(f"  job, wall clock {engine:17}: {job_per_core:8.0f} events/s/core  (load average {load:.1f})")
    if spark:
        on_spark = spark["wall_events_per_s_per_core"]
        print(f"  job on Spark, wall clock (JVM)   : {on_spark:8.0f} events/s/core")
    if marginal:
        print(f"  job, marginal (two inputs)       : {marginal:8.0f} events/s/core")
    print(f"  job, task CPU time               : {task_rate:8.0f} events/s/core")
    print(f"  in-process, one core, CPU time   : {single:8.0f} events/s")
    print(f"  per-event oracle, one core, CPU  : {slow:8.0f} events/s  (reading excluded)")
    print(f"  reference (SparkDLTrigger)       : {REFERENCE_EVENTS_PER_S_PER_CORE:8.1f} events/s/core")
    print(f"  ratio to the oracle: tasks {task_rate / slow:.1f}x, in-process {single / slow:.1f}x")
    print(f"  ratio to the reference: tasks {task_rate / REFERENCE_EVENTS_PER_S_PER_CORE:.0f}x, ", end="")
    print(f"job wall clock {job_per_core / REFERENCE_EVENTS_PER_S_PER_CORE:.0f}x")
    verdict = "met" if job_per_core >= TARGET_WALL_PER_CORE else "NOT met"
    print(f"  target {TARGET_WALL_PER_CORE:.0f} events/s/core (wall clock): {verdict}")
    write_result(args.results_dir, "ingest", result)
    return result


if __name__ == "__main__":
    main()
