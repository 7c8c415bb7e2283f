"""The published Spark approach to the di-muon spectrum, as a contender in bench.dimuon: the same
selection as a plain PySpark DataFrame job over Parquet (Spark SQL expressions, no Python UDF), run as
its own process so that its JVM start-up is measured (≈ 1–1.4 M events/s/core in Canali's notes).

    python -m bench.spark_parquet --cores N --bins B --output counts.npy PARQUET_DIR
"""

from __future__ import annotations

import argparse

import numpy as np

from jobs.core.spark import spark_session
from jobs.dimuon.job import MASS_RANGE


def mass_counts(spark, parquet_dir: str, mass_bins: int) -> np.ndarray:
    """Exactly two muons, opposite charge, mass of the (pt, eta, phi, m) sum, log-binned histogram,
    all in Spark SQL expressions, the result collected as bin counts."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(parquet_dir)
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
    lo, hi = np.log(MASS_RANGE[0]), np.log(MASS_RANGE[1])
    binned = mass.where(f"m >= {MASS_RANGE[0]} AND m < {MASS_RANGE[1]}").select(
        F.floor((F.log("m") - lo) / (hi - lo) * mass_bins).cast("int").alias("bin")
    )
    counts = np.zeros(mass_bins, np.int64)
    for row in binned.groupBy("bin").count().collect():
        counts[min(row["bin"], mass_bins - 1)] = row["count"]
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spark_parquet", description=__doc__.splitlines()[0]
    )
    parser.add_argument("parquet_dir")
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--bins", type=int, default=2000)
    parser.add_argument("--output", required=True, help=".npy of the mass histogram's bin counts")
    args = parser.parse_args(argv)
    spark = spark_session("bench-dimuon-parquet", master=f"local[{args.cores}]")
    try:
        np.save(args.output, mass_counts(spark, args.parquet_dir, args.bins))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
