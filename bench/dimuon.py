"""Di-muon benchmark: events/s/core of `jobs.dimuon` straight from ROOT, beside the published Spark
approach measured in the same script on the same events: the same selection as a plain PySpark
DataFrame job over Parquet (≈ 1–1.4 M events/s/core in Canali's notes). Prints the ratio.

    python -m bench.dimuon [--events 20000000] [--cores 2] [--workdir out/bench/dimuon]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import awkward as ak
import numpy as np
import uproot

from jobs.core.spark import spark_session
from jobs.dimuon import job as dimuon
from jobs.dimuon.selection import SCHEMA_BRANCHES
from jobs.generate import nanoaod


def to_parquet(root_files: list[str], out_dir: str) -> None:
    """The same events as Parquet (one file per ROOT file), as the DataFrame approach reads them."""
    os.makedirs(out_dir, exist_ok=True)
    for i, path in enumerate(root_files):
        with uproot.open(path) as f:
            arrays = f["Events"].arrays(SCHEMA_BRANCHES["nanoaod"])
        ak.to_parquet(arrays, os.path.join(out_dir, f"part-{i:04d}.parquet"))


def dataframe_baseline(spark, parquet_dir: str, mass_bins: int) -> tuple[int, np.ndarray]:
    """Exactly two muons, opposite charge, mass of the (pt, eta, phi, m) sum, log-binned histogram,
    all in Spark SQL expressions (no Python UDF), the result collected as bin counts."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(parquet_dir)
    events = df.count()
    two = df.where("nMuon = 2 AND Muon_charge[0] != Muon_charge[1]")
    p = [(f"Muon_pt[{i}]", f"Muon_eta[{i}]", f"Muon_phi[{i}]", f"Muon_mass[{i}]") for i in (0, 1)]
    comps = {
        "px": " + ".join(f"{pt}*cos({phi})" for pt, _, phi, _ in p),
        "py": " + ".join(f"{pt}*sin({phi})" for pt, _, phi, _ in p),
        "pz": " + ".join(f"{pt}*sinh({eta})" for pt, eta, _, _ in p),
        "e": " + ".join(f"sqrt(pow({pt}*cosh({eta}), 2) + pow({m}, 2))" for pt, eta, _, m in p),
    }
    mass = two.selectExpr(*(f"{v} AS {k}" for k, v in comps.items())).selectExpr(
        "sqrt(greatest(e*e - px*px - py*py - pz*pz, 0)) AS m"
    )
    lo, hi = np.log(dimuon.MASS_RANGE[0]), np.log(dimuon.MASS_RANGE[1])
    binned = mass.where(f"m >= {dimuon.MASS_RANGE[0]} AND m < {dimuon.MASS_RANGE[1]}").select(
        F.floor((F.log("m") - lo) / (hi - lo) * mass_bins).cast("int").alias("bin")
    )
    counts = np.zeros(mass_bins, np.int64)
    for row in binned.groupBy("bin").count().collect():
        counts[min(row["bin"], mass_bins - 1)] = row["count"]
    return events, counts


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dimuon", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", default="out/bench/dimuon")
    parser.add_argument("--repeat", type=int, default=2, help="timed repetitions (best is reported)")
    args = parser.parse_args(argv)
    root_dir = os.path.join(args.workdir, f"nanoaod-{args.events}")
    parquet_dir = root_dir + "-parquet"
    if not os.path.exists(os.path.join(root_dir, "_SUCCESS")):
        files, dt = timed(nanoaod.generate, events=args.events, output=root_dir, files=args.files, seed=1)
        print(f"generated {args.events:,} events in {dt:.1f} s ({args.events / dt / 1e6:.2f} M events/s)")
    files = sorted(os.path.join(root_dir, f) for f in os.listdir(root_dir) if f.endswith(".root"))
    if not os.path.isdir(parquet_dir):
        to_parquet(files, parquet_dir)
    root_mb = sum(os.path.getsize(f) for f in files) / 1e6

    spark = spark_session("bench-dimuon", master=f"local[{args.cores}]")
    try:
        chunk = -(-args.events // (args.files * 2))  # a few tasks per core
        ours = []
        for i in range(args.repeat):
            out = os.path.join(args.workdir, f"out-{i}")
            m, dt = timed(dimuon.run, files, out, spark=spark, chunk_entries=chunk, plot=False)
            ours.append(dt)
        base = []
        for _ in range(args.repeat):
            (events, counts), dt = timed(dataframe_baseline, spark, parquet_dir, dimuon.DEFAULT_MASS_BINS)
            base.append(dt)
    finally:
        spark.stop()
    ours_hist = uproot.open(os.path.join(args.workdir, "out-0", "histograms.root"))["dimuon_mass"].values()
    agree = int(np.abs(ours_hist - counts).sum())
    n = m["events"]
    rate, base_rate = n / min(ours) / args.cores, events / min(base) / args.cores
    result = {
        "events": n,
        "cores": args.cores,
        "root_mb": round(root_mb, 1),
        "colliderflow_seconds": round(min(ours), 2),
        "colliderflow_events_per_s_per_core": round(rate),
        "dataframe_parquet_seconds": round(min(base), 2),
        "dataframe_parquet_events_per_s_per_core": round(base_rate),
        "ratio": round(rate / base_rate, 2),
        "histogram_entries_differing": agree,
    }
    print(json.dumps(result, indent=2))
    print(
        f"colliderflow: {rate / 1e6:.2f} M events/s/core from ROOT; DataFrame on Parquet: "
        f"{base_rate / 1e6:.2f} M events/s/core; ratio {rate / base_rate:.2f}x "
        f"(targets: >= 3 M/s/core and >= 2x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
