"""Training and evaluation throughput of the Inclusive Classifier on this machine's CPU.

    python -m bench.train [--train-events 2048] [--test-events 1024] [--max-particles 400] [--epochs 2]

Same synthetic prepared set (tests/jobs/prepared_fixture.py, global-scaling layout, up to
--max-particles real rows per event, class-dependent lengths averaging about half of it) for both
set-ups, in one run: unbucketed over all 801 rows (the reference set-up) and --bucketing. Training
events/s is the last epoch's (the first one includes graph tracing); evaluation events/s is after
the first batch (which includes tracing, reported separately). Ratios are printed against the
reference CPU figure of 225 events/s (SparkDLTrigger, one CPU node) and the target of 1,000 events/s
per core with bucketing. Timings on a shared machine are noisy: run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

REFERENCE_CPU_EVENTS_PER_S = 225.0
TARGET_PER_CORE = 1000.0


def _train(sets: dict[str, str], out: str, epochs: int, bucketing: bool, workers: int = 1) -> dict:
    from jobs.core import cli
    from jobs.train import job as train

    argv = ["--train", sets["train_tfrecord"], "--test", sets["test_tfrecord"], "--output", out,
            "--epochs", str(epochs), "--lr", "0.003", "--shuffle-buffer", "512"]  # fmt: skip
    if bucketing:
        argv.append("--bucketing")
    if workers > 1:
        argv += ["--workers", str(workers)]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.splitlines()[0])
    parser.add_argument("--train-events", type=int, default=2048)
    parser.add_argument("--test-events", type=int, default=2048)
    parser.add_argument("--max-particles", type=int, default=400, help="longest real particle list")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="also bucketed with N local workers (0: skip)")
    parser.add_argument("--scratch", default="/tmp/bench-train")
    args = parser.parse_args()

    from tests.jobs.prepared_fixture import generate, write_prepared

    os.makedirs(args.scratch, exist_ok=True)
    sets = write_prepared(
        os.path.join(args.scratch, "data"), args.train_events, args.test_events, seed=3,
        max_particles=args.max_particles, shards=2,
    )  # fmt: skip
    mean_len = float(generate(2000, seed=3, max_particles=args.max_particles).n_particles.mean())
    cores = len(os.sched_getaffinity(0))
    results: dict = {"cores": cores, "train_events": args.train_events, "test_events": args.test_events,
                     "mean_real_particles": mean_len, "epochs": args.epochs}  # fmt: skip
    for name, bucketing in (("unbucketed", False), ("bucketed", True)):
        out = os.path.join(args.scratch, name)
        tr = _train(sets, out, args.epochs, bucketing)
        ev = _evaluate(os.path.join(out, "model.keras"), sets["test_tfrecord"], out + "-eval", bucketing)
        results[name] = {
            "train_events_per_second": tr["events_per_second"],
            "train_events_per_second_per_core": tr["events_per_second"] / cores,
            "train_events_per_cpu_second": tr["events_per_cpu_second"],
            "train_wall_seconds": tr["wall_seconds"],
            "eval_events_per_second": ev["events_per_second"],  # after the first batch (tracing)
            "eval_first_batch_seconds": ev["first_batch_seconds"],
            "test_auc": ev["auc"],
        }
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
        }
    ub, bk = results["unbucketed"], results["bucketed"]
    results["ratios"] = {
        "unbucketed_train_vs_reference_225": ub["train_events_per_second"] / REFERENCE_CPU_EVENTS_PER_S,
        "bucketed_train_vs_reference_225": bk["train_events_per_second"] / REFERENCE_CPU_EVENTS_PER_S,
        "bucketed_vs_unbucketed_train": bk["train_events_per_second"] / ub["train_events_per_second"],
        "bucketed_per_core_vs_target_1000": bk["train_events_per_second_per_core"] / TARGET_PER_CORE,
        "bucketed_per_cpu_second_vs_target_1000": bk["train_events_per_cpu_second"] / TARGET_PER_CORE,
        "bucketed_vs_unbucketed_eval": bk["eval_events_per_second"] / ub["eval_events_per_second"],
    }
    print(json.dumps(results, indent=2))
    mw = f"bucketed_{args.workers}_workers"
    print(
        f"\ntraining events/s on {cores} cores: unbucketed {ub['train_events_per_second']:.0f} "
        f"({results['ratios']['unbucketed_train_vs_reference_225']:.2f}x the reference 225), "
        f"bucketed {bk['train_events_per_second']:.0f} "
        f"({results['ratios']['bucketed_train_vs_reference_225']:.2f}x; "
        f"{bk['train_events_per_second_per_core']:.0f}/core = "
        f"{results['ratios']['bucketed_per_core_vs_target_1000']:.2f}x the 1000/core target)\n"
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
