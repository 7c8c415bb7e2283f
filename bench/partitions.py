"""Partitions benchmark: a night costs what arrived, not what is stored; the cumulative rebuild is cheap.

- full run: `jobs.dimuon` over all N files of the input (the local default engine: worker processes);
- night: 5 % more files arrive; what a nightly cms_dimuon run then does, each step timed: the partition
  choice (`plan_run`: lists the input, reads the log, claims the new files), `jobs.dimuon` on the night's
  manifest, and the cumulative rebuild (`jobs.dimuon.cumulative`, every partition so far);
- both at two input sizes N: the night's share of a full run must stay under 10 % at both, and the
  night's own cost must not grow with N as the full run does;
- the cumulative rebuild over 100 partitions (one small file each): under 2 s.

Results: out/bench/partitions.json.

    python -m bench.partitions [--files 80 160] [--events-per-file 500000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from bench.common import add_common_args, cores_available, target, write_result
from jobs.core.partitions import Source, partitions_root, plan_run
from jobs.dimuon import cumulative, job
from jobs.generate import nanoaod

NEW_SHARE = 0.05
NIGHT_SHARE_GOAL = 0.10
REBUILD_PARTITIONS = 100
REBUILD_GOAL_S = 2.0


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def generate(base: str, files: int, events_per_file: int, seed: int) -> list[str]:
    out = os.path.join(base, f"gen-{files}-{seed}")
    nanoaod.generate(events=files * events_per_file, output=out, files=files, seed=seed)
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".root"))


def one_size(base: str, n: int, events_per_file: int) -> dict:
    """A first night over N files, then the full run over them, then a night that adds 5 %."""
    new = max(1, round(n * NEW_SHARE))
    files = generate(base, n + new, events_per_file, seed=n)
    inp, runs = os.path.join(base, f"in-{n}"), os.path.join(base, f"runs-{n}")
    os.makedirs(inp)
    for f in files[:n]:
        os.link(f, os.path.join(inp, os.path.basename(f)))
    source, root = Source({"input": [inp]}, runs), partitions_root(runs, "cms_dimuon")
    first = plan_run(root, source, "night-1", "2026-03-01")
    job.run(
        [], f"{runs}/cms_dimuon/night-1/dimuon", manifests=first.manifests, engine="processes", plot=False
    )
    full = timed(job.run, [inp], os.path.join(base, f"full-{n}"), engine="processes", plot=False)
    for f in files[n:]:
        os.link(f, os.path.join(inp, os.path.basename(f)))
    t0 = time.perf_counter()
    night = plan_run(root, source, "night-2", "2026-03-02")
    choose = time.perf_counter() - t0
    reduce = timed(job.run, [], f"{runs}/cms_dimuon/night-2/dimuon", manifests=night.manifests,
                   engine="processes", plot=False)  # fmt: skip
    rebuild = timed(cumulative.build, night.manifests[0], f"{runs}/cms_dimuon/cumulative", plot=False)
    total = choose + reduce + rebuild
    return {
        "files": n, "new_files": new, "events_per_file": events_per_file,
        "full_run_seconds": round(full, 3),
        "night_seconds": {"choose_partitions": round(choose, 3), "dimuon": round(reduce, 3),
                          "cumulative": round(rebuild, 3), "total": round(total, 3)},
        "night_share_of_full_run": round(total / full, 4),
    }  # fmt: skip


def rebuild_100(base: str) -> float:
    """The cumulative rebuild over REBUILD_PARTITIONS partitions of one small file each."""
    files = generate(base, REBUILD_PARTITIONS, 2000, seed=99)
    inp, runs = os.path.join(base, "in-rebuild"), os.path.join(base, "runs-rebuild")
    os.makedirs(inp)
    source, root = Source({"input": [inp]}, runs), partitions_root(runs, "cms_dimuon")
    manifests = []
    for i, f in enumerate(files):
        os.link(f, os.path.join(inp, os.path.basename(f)))
        plan = plan_run(root, source, f"r{i}", f"2026-01-01.{i}")
        job.run(
            [], f"{runs}/cms_dimuon/r{i}/dimuon", manifests=plan.manifests, engine="processes", plot=False
        )
        manifests += plan.manifests
    return timed(cumulative.build, manifests[-1], f"{runs}/cms_dimuon/cumulative", plot=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs=2, default=None, help="the two input sizes N (files)")
    parser.add_argument("--events-per-file", type=int, default=None)
    add_common_args(parser)
    args = parser.parse_args()
    sizes = args.files or ([20, 40] if args.quick else [80, 160])
    per_file = args.events_per_file or (100_000 if args.quick else 500_000)  # a NanoAOD file holds ~10^6
    base = tempfile.mkdtemp(prefix="colliderflow-bench-partitions-")
    try:
        nights = [one_size(base, n, per_file) for n in sizes]
        rebuild = rebuild_100(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    worst = max(r["night_share_of_full_run"] for r in nights)
    growth = nights[1]["night_seconds"]["total"] / nights[0]["night_seconds"]["total"]
    full_growth = nights[1]["full_run_seconds"] / nights[0]["full_run_seconds"]
    share = "a 5 % night / a full run, worst of two sizes"
    write_result(args.results_dir, "partitions", {
        "cores": cores_available(),
        "quick": args.quick,
        "nights": nights,
        "night_cost_growth_larger_over_smaller_input": round(growth, 3),
        "full_run_growth_larger_over_smaller_input": round(full_growth, 3),
        "cumulative_rebuild_100_partitions_seconds": round(rebuild, 3),
        "targets": {
            "night_share": target(worst, NIGHT_SHARE_GOAL, share, False),
            "rebuild": target(rebuild, REBUILD_GOAL_S, "cumulative rebuild over 100 partitions [s]", False),
        },
    })  # fmt: skip


if __name__ == "__main__":
    main()
