"""Training and evaluation throughput of the Inclusive Classifier on this machine's CPU.

    python -m bench.train [--train-events 2048] [--test-events 2048] [--epochs 2] [--seeds 2] [--quick]

Same synthetic prepared set (bench/fixtures/prepared.py, global-scaling layout, up to
--max-particles real rows per event, class-dependent lengths averaging about half of it) for both
set-ups, in one run: unbucketed over all 801 rows (the reference set-up) and --bucketing. Training
events/s is the last epoch's (the first one includes graph tracing); evaluation events/s is after
the first batch (which includes tracing, reported separately). Ratios are printed against the
reference CPU figure of 225 events/s (SparkDLTrigger, one CPU node) and issue 14's target of 2,000
events/s per core with bucketing. Each set-up trains --seeds times (seeds 42, 43, ...) for the same
epochs: the per-class AUC spread over seeds is the tolerance of "bucketed AUC equals unbucketed".
A bucketed run on a quarter of the training set gives the memory at a second size. Results:
out/bench/train.json. Timings on a shared machine are noisy: run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench.common import MEMORY_METHOD, PeakRSS, add_common_args, target, write_result

REFERENCE_CPU_EVENTS_PER_S = 225.0
TARGET_PER_CORE = 2000.0  # issue 14


def _train(
    sets: dict[str, str], out: str, epochs: int, bucketing: bool, workers: int = 1, seed: int = 42
) -> dict:
    from jobs.core import cli
    from jobs.train import job as train

    argv = ["--train", sets["train_tfrecord"], "--test", sets["test_tfrecord"], "--output", out,
            "--epochs", str(epochs), "--lr", "0.003", "--shuffle-buffer", "512",
            "--seed", str(seed)]  # fmt: skip
    if bucketing:
        argv.append("--bucketing")
    if workers > 1:
        argv += ["--workers", str(workers)]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with PeakRSS() as peak:
        assert cli.run(train.main, argv) == 0
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    last = history[-1]
    return {
        "events_per_second": last["events_per_second"],
        # the chief's own CPU time: meaningful for one process only
        "events_per_cpu_second": last["events"] / last["train_cpu_seconds"] if workers == 1 else None,
        "wall_seconds": wall,
        "peak_rss_mb": peak.as_dict(),
    }


def _evaluate(model: str, test: str, out: str, bucketing: bool) -> dict:
    from jobs.core import cli
    from jobs.evaluate import job as evaluate

    argv = ["--model", model, "--test", test, "--output", out] + (["--bucketing"] if bucketing else [])
    assert cli.run(evaluate.main, argv) == 0
    with open(os.path.join(out, "_metrics.json")) as f:
        m = json.load(f)
    return {"events_per_second": m["steady_events_per_second"], "auc": m["auc"], "events": m["events"],
            "first_batch_seconds": m["first_batch_seconds"]}  # fmt: skip


def _setup(sets: dict[str, str], scratch: str, name: str, bucketing: bool, args, cores: int) -> dict:
    """One set-up trained once per seed (same epochs): rates of the first seed, AUC per class of each."""
    runs = []
    for seed in range(42, 42 + args.seeds):
        out = os.path.join(scratch, f"{name}-seed{seed}")
        tr = _train(sets, out, args.epochs, bucketing, seed=seed)
        ev = _evaluate(os.path.join(out, "model.keras"), sets["test_tfrecord"], out + "-eval", bucketing)
        runs.append((tr, ev))
    tr, ev = runs[0]
    aucs = [e["auc"] for _, e in runs]
    return {
        "train_events_per_second": tr["events_per_second"],
        "train_events_per_second_per_core": tr["events_per_second"] / cores,
        "train_events_per_cpu_second": tr["events_per_cpu_second"],
        "train_wall_seconds": tr["wall_seconds"],
        "eval_events_per_second": ev["events_per_second"],  # after the first batch (tracing)
        "eval_first_batch_seconds": ev["first_batch_seconds"],
        "test_auc": ev["auc"],
        "test_auc_per_seed": aucs,
        "seed_spread": {k: _spread([a[k] for a in aucs]) for k in aucs[0]},
        "peak_rss_mb": tr["peak_rss_mb"],
    }


def _spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if len(known) > 1 else None


def auc_target(unbucketed: dict, bucketed: dict) -> dict:
    """Per-class AUC of bucketed equal to unbucketed within the seed spread (the larger of the two
    set-ups' spreads, at least 0.005): value = the worst class's |difference| / its tolerance."""
    worst = None
    for cls, auc in unbucketed["test_auc"].items():
        other = bucketed["test_auc"].get(cls)
        if auc is None or other is None:
            continue
        spreads = [x for x in (unbucketed["seed_spread"].get(cls), bucketed["seed_spread"].get(cls)) if x]
        tolerance = max([0.005, *spreads])
        ratio = abs(other - auc) / tolerance
        worst = ratio if worst is None else max(worst, ratio)
    return target(worst, 1.0, "bucketed per-class AUC within the seed spread of unbucketed", False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.splitlines()[0])
    parser.add_argument("--train-events", type=int, default=None, help="default 2048 (quick 512)")
    parser.add_argument(
        "--test-events", type=int, default=None, help="default 2048 (quick 1024: two evaluation batches)"
    )
    parser.add_argument("--max-particles", type=int, default=400, help="longest real particle list")
    parser.add_argument("--epochs", type=int, default=None, help="default 2 (the last epoch is timed)")
    parser.add_argument("--seeds", type=int, default=2, help="trainings per set-up (the AUC seed spread)")
    parser.add_argument(
        "--workers", type=int, default=None, help="also bucketed with N local workers (0: skip)"
    )
    parser.add_argument("--scratch", default="/tmp/bench-train")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.train_events = args.train_events or (512 if args.quick else 2048)
    args.test_events = args.test_events or (1024 if args.quick else 2048)
    args.epochs = args.epochs or 2
    args.workers = (0 if args.quick else 2) if args.workers is None else args.workers

    from bench.fixtures.prepared import generate, write_prepared

    os.makedirs(args.scratch, exist_ok=True)
    sets = write_prepared(
        os.path.join(args.scratch, "data"), args.train_events, args.test_events, seed=3,
        max_particles=args.max_particles, shards=2,
    )  # fmt: skip
    mean_len = float(generate(2000, seed=3, max_particles=args.max_particles).n_particles.mean())
    cores = len(os.sched_getaffinity(0))
    results: dict = {"cores": cores, "train_events": args.train_events, "test_events": args.test_events,
                     "mean_real_particles": mean_len, "epochs": args.epochs, "seeds": args.seeds}  # fmt: skip
    for name, bucketing in (("unbucketed", False), ("bucketed", True)):
        results[name] = _setup(sets, args.scratch, name, bucketing, args, cores)
    # memory at a second size: bucketed on a quarter of the training set
    small_events = max(args.train_events // 4, 128)
    small_sets = write_prepared(
        os.path.join(args.scratch, "data-small"), small_events, args.test_events, seed=3,
        max_particles=args.max_particles, shards=2,
    )  # fmt: skip
    small = _train(small_sets, os.path.join(args.scratch, "bucketed-small"), args.epochs, True)
    if args.workers > 1:
        # the GRU's time loop keeps about one core busy per process; N local workers (the
        # MultiWorkerMirroredStrategy path on loopback, global batch 128*N, lr*N) use N cores
        out = os.path.join(args.scratch, f"bucketed-{args.workers}-workers")
        tr = _train(sets, out, args.epochs, True, workers=args.workers)
        ev = _evaluate(os.path.join(out, "model.keras"), sets["test_tfrecord"], out + "-eval", True)
        results[f"bucketed_{args.workers}_workers"] = {
            "train_events_per_second": tr["events_per_second"],
            "train_events_per_second_per_core": tr["events_per_second"] / cores,
            "train_wall_seconds": tr["wall_seconds"],
            "test_auc": ev["auc"],
            "peak_rss_mb": tr["peak_rss_mb"],
        }
    ub, bk = results["unbucketed"], results["bucketed"]
    results["ratios"] = {
        "unbucketed_train_vs_reference_225": ub["train_events_per_second"] / REFERENCE_CPU_EVENTS_PER_S,
        "bucketed_train_vs_reference_225": bk["train_events_per_second"] / REFERENCE_CPU_EVENTS_PER_S,
        "bucketed_vs_unbucketed_train": bk["train_events_per_second"] / ub["train_events_per_second"],
        "bucketed_per_core_vs_target": bk["train_events_per_second_per_core"] / TARGET_PER_CORE,
        "bucketed_per_cpu_second_vs_target": (bk["train_events_per_cpu_second"] or 0) / TARGET_PER_CORE,
        # None when the test set is one batch (no steady-state evaluation rate)
        "bucketed_vs_unbucketed_eval": (
            bk["eval_events_per_second"] / ub["eval_events_per_second"]
            if ub["eval_events_per_second"]
            else None
        ),
    }
    results.update(
        {
            "bucketed_events_per_s_per_core": bk["train_events_per_second_per_core"],
            "unbucketed_events_per_s_per_core": ub["train_events_per_second_per_core"],
            "bucketed_auc": bk["test_auc"],
            "unbucketed_auc": ub["test_auc"],
            "auc_seed_spread": {"bucketed": bk["seed_spread"], "unbucketed": ub["seed_spread"]},
            "peak_rss_mb": {
                "small": {**small["peak_rss_mb"], "train_events": small_events},
                "large": {**bk["peak_rss_mb"], "train_events": args.train_events},
            },
            "memory_method": MEMORY_METHOD + " (driver = the training process; task = a worker process)",
            "targets": {
                "bucketed_per_core": target(
                    bk["train_events_per_second_per_core"], TARGET_PER_CORE, "bucketed training events/s/core"
                ),
                "auc_equal": auc_target(ub, bk),
            },
        }
    )
    print(json.dumps(results, indent=2))
    write_result(args.results_dir, "train", results)
    mw = f"bucketed_{args.workers}_workers"
    print(
        f"\ntraining events/s on {cores} cores: unbucketed {ub['train_events_per_second']:.0f} "
        f"({results['ratios']['unbucketed_train_vs_reference_225']:.2f}x the reference 225), "
        f"bucketed {bk['train_events_per_second']:.0f} "
        f"({results['ratios']['bucketed_train_vs_reference_225']:.2f}x; "
        f"{bk['train_events_per_second_per_core']:.0f}/core = "
        f"{results['ratios']['bucketed_per_core_vs_target']:.2f}x the 2000/core target)\n"
        f"events per CPU-second (robust to other load): unbucketed {ub['train_events_per_cpu_second']:.0f}, "
        f"bucketed {bk['train_events_per_cpu_second']:.0f}\n"
        + (
            f"bucketed with {args.workers} local workers: "
            f"{results[mw]['train_events_per_second']:.0f} events/s "
            f"({results[mw]['train_events_per_second_per_core']:.0f}/core = "
            f"{results[mw]['train_events_per_second_per_core'] / TARGET_PER_CORE:.2f}x the target)\n"
            if mw in results
            else ""
        )
        + f"evaluation events/s: unbucketed {ub['eval_events_per_second']:.0f}, "
        f"bucketed {bk['eval_events_per_second']:.0f}\n"
        f"test AUC unbucketed {ub['test_auc']} vs bucketed {bk['test_auc']} (after {args.epochs} epochs)"
    )


if __name__ == "__main__":
    main()
