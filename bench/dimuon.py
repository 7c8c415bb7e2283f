"""Di-muon benchmark: `jobs.dimuon` beside its peers, same script, same files. Every contender runs as
its own process on a small and a large input (generated once by jobs.generate and reused):

- colliderflow: `python -m jobs.dimuon --master local[cores]` on the ROOT files as a user runs it (the
  default engine: a local process pool, no JVM, as in a DAG run), and the same on Spark
  (`--engine spark`);
- ROOT RDataFrame 6.40 (the `peers` group) on the df102 selection, one thread and all cores (IMT);
- the published Spark approach: a PySpark DataFrame job on the same events as Parquet, local[cores];
- the read floor: plain uproot reading just the six branches, one core;
- cms_dimuon as a DAG run (`airflow dags test` on the large input): `dag_wall_seconds` is its dimuon
  task's duration as Airflow recorded it, beside `same_command_alone_wall_seconds` (the command that
  task ran, plot included, run alone) and `standalone_wall_seconds` (the contender: no plot).

Reported per contender: the marginal throughput (events/s/core from the slope between the two inputs,
so start-up and JIT cancel), the end-to-end wall time of the large input including start-up, the
start-up (the intercept), the peak memory of both runs, and the largest bin difference of its mass
histogram against colliderflow's. Results: out/bench/dimuon.json.

    python -m bench.dimuon [--events 20000000] [--small-events 1000] [--cores N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import time

import awkward as ak
import numpy as np
import uproot

from bench.common import (
    MEMORY_METHOD,
    add_common_args,
    cores_available,
    marginal_rate,
    memory_growth,
    python_module,
    run_command,
    startup_seconds,
    target,
    write_result,
)
from jobs.dimuon.selection import SCHEMA_BRANCHES
from jobs.generate import nanoaod

MASS_BINS = 2000  # jobs.dimuon's default, log-spaced over its MASS_RANGE
TARGET_PER_CORE = 7e6  # issue 14: half the read floor measured there (14.2 M events/s)
TARGET_VS_RDATAFRAME = 2.0
TARGET_DAG_VS_STANDALONE = 1.3  # issue 20


def make_input(workdir: str, events: int, files: int) -> tuple[str, list[str], str]:
    """(ROOT dir, its files, the same events as Parquet, one file per ROOT file), generated once."""
    root_dir = os.path.join(workdir, f"nanoaod-{events}-{files}")
    if not os.path.exists(os.path.join(root_dir, "_SUCCESS")):
        t0 = time.perf_counter()
        nanoaod.generate(events=events, output=root_dir, files=files, seed=1)
        print(f"generated {events:,} events in {time.perf_counter() - t0:.1f} s -> {root_dir}")
    paths = sorted(os.path.join(root_dir, f) for f in os.listdir(root_dir) if f.endswith(".root"))
    parquet_dir = root_dir + "-parquet"
    if not os.path.exists(os.path.join(parquet_dir, "_SUCCESS")):
        os.makedirs(parquet_dir, exist_ok=True)
        for i, path in enumerate(paths):
            with uproot.open(path) as f:
                arrays = f["Events"].arrays(SCHEMA_BRANCHES["nanoaod"])
            ak.to_parquet(arrays, os.path.join(parquet_dir, f"part-{i:04d}.parquet"))
        open(os.path.join(parquet_dir, "_SUCCESS"), "w").close()
    return root_dir, paths, parquet_dir


def contenders(cores: int, events: int, files: int) -> dict[str, dict]:
    """name -> cores it uses and argv(root_dir, files, parquet_dir, out) -> (argv, histogram path)."""
    chunk = str(max(1, -(-events // (files * 2))))  # a few tasks per core

    def colliderflow(engine):
        def build(root_dir, paths, parquet_dir, out):
            argv = python_module("jobs.dimuon", "--input", root_dir, "--output", out, "--no-plot",
                                 "--master", f"local[{cores}]", "--chunk-entries", chunk,
                                 "--engine", engine)  # fmt: skip
            return argv, os.path.join(out, "histograms.root")

        return build

    def rdf(threads):
        def build(root_dir, paths, parquet_dir, out):
            hist = out + ".npy"
            argv = python_module("bench.rdf_dimuon", "--threads", str(threads), "--bins", str(MASS_BINS),
                                 "--output", hist, *paths)  # fmt: skip
            return argv, hist

        return build

    def spark_parquet(root_dir, paths, parquet_dir, out):
        hist = out + ".npy"
        argv = python_module("bench.spark_parquet", "--cores", str(cores), "--bins", str(MASS_BINS),
                             "--output", hist, parquet_dir)  # fmt: skip
        return argv, hist

    def read_floor(root_dir, paths, parquet_dir, out):
        return python_module("bench.read_floor", *paths), None

    return {
        "colliderflow": {"cores": cores, "build": colliderflow("auto")},
        "colliderflow_spark": {"cores": cores, "build": colliderflow("spark")},
        "rdataframe_1_thread": {"cores": 1, "build": rdf(1)},
        f"rdataframe_{cores}_threads": {"cores": cores, "build": rdf(cores)},
        "spark_dataframe_parquet": {"cores": cores, "build": spark_parquet},
        "read_floor_uproot": {"cores": 1, "build": read_floor},
    }


def streaming_memory(workdir: str, paths: list[str], cores: int, events: int) -> dict:
    """colliderflow's peak memory on one file and on all of them at the same entries per task: a task
    holds one chunk, so memory follows --chunk-entries, never the input (the 1,000-event input of the
    marginal rate is smaller than one chunk and says nothing about streaming)."""
    chunk = str(max(1, -(-events // (len(paths) * 2))))
    peaks = {}
    for size, files in (("small", paths[:1]), ("large", paths)):
        out = os.path.join(workdir, "runs", f"memory-{size}")
        argv = python_module("jobs.dimuon", "--input", *files, "--output", out, "--no-plot",
                             "--master", f"local[{cores}]", "--chunk-entries", chunk)  # fmt: skip
        _, peaks[size] = run_command(argv)
    n = events // len(paths)
    return {**memory_growth(peaks), "peak_rss_mb": peaks, "events": {"small": n, "large": n * len(paths)},
            "events_per_task": int(chunk)}  # fmt: skip


def dag_run(workdir: str, root_dir: str) -> dict:
    """cms_dimuon as a DAG run (`airflow dags test`, embedded default: SQLite, local backend, `auto`
    engine) on the large input: the whole command's wall time and the dimuon task's own duration as
    Airflow recorded it (its subprocess included)."""
    from colliderflow import environment, progress

    home = os.path.abspath(os.path.join(workdir, "airflow"))
    env = {**environment.airflow_env(home), "COLLIDERFLOW_STORAGE_ROOT": ""}
    with open(os.path.join(workdir, "dag.log"), "w") as log:
        environment.prepare(env, log)
        watcher = progress.RunWatcher(env, "cms_dimuon")
        conf = {"input": [os.path.abspath(root_dir)], "output_root": os.path.abspath(f"{workdir}/dag-runs")}
        t0 = time.perf_counter()
        rc = subprocess.run([environment.airflow_exe(), "dags", "test", "cms_dimuon", "-c", json.dumps(conf)],
                            env=env, stdout=log, stderr=subprocess.STDOUT).returncode  # fmt: skip
        total = time.perf_counter() - t0
        tasks = {t.task_id: t for t in watcher.finished()}
        watcher.close()
    dimuon = tasks.get("dimuon")
    if rc or dimuon is None or dimuon.state != "success":
        raise SystemExit(f"bench.dimuon: the cms_dimuon DAG run failed (rc {rc}): see {log.name}")
    alone, _ = run_command(same_command_alone(log.name, workdir))
    return {
        "dag_wall_seconds": dimuon.seconds,
        "dag_run_wall_seconds": round(total, 2),
        "same_command_alone_wall_seconds": round(alone, 2),
    }


def same_command_alone(dag_log: str, workdir: str) -> list[str]:
    """The command the DAG's dimuon task ran (its plot, its engine, its chunking), as its log line
    `running: ...` shows it, with outputs of its own: what the task costs outside Airflow."""
    with open(dag_log) as f:
        found = re.search(r"running: (\S+ -m jobs\.dimuon .*?) \[", f.read())
    if found is None:
        raise SystemExit(f"bench.dimuon: no `running: ... -m jobs.dimuon` line in {dag_log}")
    argv = shlex.split(found.group(1))
    for flag, folder in (("--output", "alone"), ("--event-log-dir", "alone-events")):
        if flag in argv:
            argv[argv.index(flag) + 1] = os.path.abspath(os.path.join(workdir, "dag-runs", folder))
    return argv


def read_histogram(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    if path.endswith(".root"):
        with uproot.open(path) as f:
            return f["dimuon_mass"].values()
    return np.load(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dimuon", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="large input (default 20 M; quick 1 M)")
    parser.add_argument("--small-events", type=int, default=1000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--cores", type=int, default=cores_available())
    parser.add_argument("--workdir", default="out/bench/dimuon")
    parser.add_argument("--repeat", type=int, default=None, help="runs per input (best kept; quick 1)")
    parser.add_argument("--only", nargs="*", default=None, help="contenders to run (default all)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    large = args.events or (1_000_000 if args.quick else 20_000_000)
    repeat = args.repeat or (1 if args.quick else 2)
    sizes = {"small": args.small_events, "large": large}
    inputs = {k: make_input(args.workdir, n, args.files) for k, n in sizes.items()}
    all_contenders = contenders(args.cores, large, args.files)
    chosen = {k: v for k, v in all_contenders.items() if args.only is None or k in args.only}

    results: dict[str, dict] = {}
    histograms: dict[str, np.ndarray | None] = {}
    for name, c in chosen.items():
        walls, peaks = {}, {}
        for size, n in sizes.items():
            best = None
            for i in range(repeat):
                out = os.path.join(args.workdir, "runs", f"{name}-{size}-{i}")
                run_argv, hist_path = c["build"](*inputs[size], out)
                wall, peak = run_command(run_argv)
                print(f"{name:24s} {size:5s} {n:>11,} events: {wall:7.2f} s")
                if best is None or wall < best[0]:
                    best = (wall, peak, hist_path)
            walls[size], peaks[size] = best[0], best[1]
            if size == "large":
                histograms[name] = read_histogram(best[2])
        rate = marginal_rate((sizes["small"], walls["small"]), (large, walls["large"]), c["cores"])
        results[name] = {
            "cores": c["cores"],
            "events_per_s_per_core": rate,
            "wall_seconds": walls,
            "startup_seconds": startup_seconds((sizes["small"], walls["small"]), rate, c["cores"]),
            "peak_rss_mb": peaks,
        }
    reference = histograms.get("colliderflow")
    for name, h in histograms.items():
        if h is not None and reference is not None:
            diff = np.abs(np.asarray(h, np.float64) - reference)
            results[name]["histogram_max_bin_difference"] = float(diff.max())
            results[name]["histogram_total_difference"] = float(diff.sum())
            results[name]["histogram_entries"] = float(np.sum(h))

    get = lambda name, key: results.get(name, {}).get(key)  # noqa: E731 - local shorthand
    rdf_mt = f"rdataframe_{args.cores}_threads"
    ours, rdf = get("colliderflow", "events_per_s_per_core"), get(rdf_mt, "events_per_s_per_core")
    rdf_walls = [w["large"] for w in (get(rdf_mt, "wall_seconds"), get("rdataframe_1_thread", "wall_seconds"))
                 if w]  # fmt: skip
    ours_wall = (get("colliderflow", "wall_seconds") or {}).get("large")
    summary = {
        "events_per_s_per_core": ours,
        "rdataframe_events_per_s_per_core": rdf,
        "rdataframe_1_thread_events_per_s_per_core": get("rdataframe_1_thread", "events_per_s_per_core"),
        "read_floor_events_per_s_per_core": get("read_floor_uproot", "events_per_s_per_core"),
        "spark_parquet_events_per_s_per_core": get("spark_dataframe_parquet", "events_per_s_per_core"),
        "spark_engine_events_per_s_per_core": get("colliderflow_spark", "events_per_s_per_core"),
        "spark_engine_wall_seconds": (get("colliderflow_spark", "wall_seconds") or {}).get("large"),
        "wall_seconds": ours_wall,
        "rdataframe_wall_seconds": min(rdf_walls) if rdf_walls else None,
        "startup_seconds": get("colliderflow", "startup_seconds"),
        "histogram_max_bin_difference": max(
            (r.get("histogram_max_bin_difference", 0.0) for r in results.values()), default=None
        ),
        "peak_rss_mb": get("colliderflow", "peak_rss_mb"),
    }
    targets = {
        "per_core": target(ours, TARGET_PER_CORE, "marginal events/s/core >= 7 M (half the read floor)"),
        "vs_rdataframe": target(
            ours / rdf if ours and rdf else None,
            TARGET_VS_RDATAFRAME,
            f">= 2x RDataFrame's marginal events/s/core on {args.cores} threads",
        ),
        "wall_vs_rdataframe": target(
            ours_wall / summary["rdataframe_wall_seconds"] if ours_wall and rdf_walls else None,
            1.0,
            f"end to end on {large:,} events no slower than RDataFrame (ratio of wall times <= 1)",
            higher_is_better=False,
        ),
    }
    if "colliderflow" in chosen:
        summary.update(dag_run(args.workdir, inputs["large"][0]), standalone_wall_seconds=ours_wall)
        alone = summary["same_command_alone_wall_seconds"]
        targets["dag_vs_standalone"] = target(
            summary["dag_wall_seconds"] / alone if alone else None,
            TARGET_DAG_VS_STANDALONE,
            f"the DAG run's dimuon task within {TARGET_DAG_VS_STANDALONE}x of its own command run alone",
            higher_is_better=False,
        )
        summary["memory_growth"] = streaming_memory(args.workdir, inputs["large"][1], args.cores, large)
    write_result(
        args.results_dir,
        "dimuon",
        {
            **summary,
            "events": sizes,
            "files": args.files,
            "cores": args.cores,
            "repeat": repeat,
            "root_mb": round(sum(os.path.getsize(p) for p in inputs["large"][1]) / 1e6, 1),
            "contenders": results,
            "memory_method": MEMORY_METHOD,
            "targets": targets,
        },
    )
    print(
        f"\n{'contender':26s} {'cores':>5s} {'M ev/s/core':>12s} {'wall (s)':>9s} {'start-up':>9s} "
        f"{'max Δbin':>9s}"
    )
    for name, r in results.items():
        rate = r["events_per_s_per_core"]
        print(
            f"{name:26s} {r['cores']:5d} {rate / 1e6 if rate else float('nan'):12.2f} "
            f"{r['wall_seconds']['large']:9.2f} {r['startup_seconds'] or float('nan'):9.2f} "
            f"{r.get('histogram_max_bin_difference', float('nan')):9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
