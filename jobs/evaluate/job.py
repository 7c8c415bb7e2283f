"""Evaluate a trained Inclusive Classifier on a prepared test set.

    python -m jobs.evaluate --model DIR/model.keras --test URL --output DIR [--history DIR/history.json]

Per-class one-vs-rest ROC AUC (how the reference reports it), accuracy, confusion matrix, ROC-curve,
efficiency-vs-rejection (the trigger physicist's view) and loss-curve PNGs, predictions.npz;
_metrics.json with `auc` {qcd, ttbar, wjets}, `accuracy`, `confusion_matrix` (rows: true class,
columns: predicted), `background_rejection` {class: {efficiency: 1/FPR}}, `plots`, `events`,
`events_per_second`, and `quality`: the verdict against --min-auc and a --baseline evaluation
(jobs.evaluate.quality).
The output directory appears atomically. --model, --test, --history and --output may be
object-store URLs (the test set is staged into local scratch: TensorFlow reads local files only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from jobs.core import cli
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.errors import BadInputError, UsageError
from jobs.core.finite import non_finite
from jobs.core.storage import METRICS_FILE, filesystem, is_local, write_json
from jobs.core.store_probe import probe_store
from jobs.core.tf_input_check import check_dataset, check_model
from jobs.core.training_history import plot_history, read_history
from jobs.dltrigger_schema import CLASSES, N_PARTICLES
from jobs.evaluate.quality import QUALITY_KEY, baseline_auc, check_thresholds, verdict

log = logging.getLogger("jobs.evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        "evaluate",
        __doc__.split("\n\n")[0],
        "python -m jobs.evaluate --model out/model/model.keras --test out/tfrecords/test "
        "--history out/model/history.json --output out/evaluation --bucketing",
    )
    p.add_argument("--model", required=True, help="model.keras written by jobs.train")
    p.add_argument("--test", required=True, help="test set: TFRecord shards or Parquet (dir/glob/URL)")
    p.add_argument("--output", required=True, help="output directory (replaced atomically)")
    p.add_argument("--history", default=None, help="history.json of jobs.train, for the loss-curve plot")
    p.add_argument(
        "--format", default="auto", choices=["auto", "tfrecord", "parquet"], help="test set format"
    )
    p.add_argument("--batch-size", type=int, default=512, help="events per prediction batch")
    p.add_argument(
        "--bucketing", action="store_true", help="batch by real particle count (global-scaling sets)"
    )
    p.add_argument("--max-particles", type=int, default=None, help="keep only the first K particle rows")
    gate = p.add_argument_group("model quality (a verdict in _metrics.json; the evaluation itself succeeds)")
    gate.add_argument("--min-auc", type=float, default=0.0, help="per-class AUC floor (0: none)")
    gate.add_argument(
        "--baseline", default=None, help="a previous evaluation folder to compare the AUC with (optional)"
    )
    gate.add_argument(
        "--max-auc-drop", type=float, default=0.02, help="tolerated AUC drop against --baseline per class"
    )
    return p


def one_vs_rest_auc(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """ROC AUC of class k's score for 'class k' against all other events, per class; None where it is
    undefined (a small test set without events of the class, or with nothing else)."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, float | None] = {}
    for k, name in enumerate(CLASSES):
        positive = y_true == k
        defined = 0 < positive.sum() < positive.size
        out[name] = float(roc_auc_score(positive, scores[:, k])) if defined else None
        if not defined:
            log.warning("AUC of %s is undefined: the test set has %d of %d events of it", name,
                        positive.sum(), positive.size)  # fmt: skip
    return out


def load_classifier(path: str, variable_length: bool, scratch: str | None = None):
    """The saved model; with variable_length, the same weights in a model that accepts any particle
    count (a model trained unbucketed has a fixed 801-row input). A model on an object store is
    copied into `scratch` (a new temporary directory if None) first: Keras opens local files only."""
    from jobs.core import model as model_lib

    fs, local = filesystem(path)
    if not fs.exists(local):
        raise BadInputError(path, "no such file")
    if not path.endswith(".keras"):
        raise BadInputError(path, "expected a .keras model file written by jobs.train")
    try:
        if not is_local(path):
            tmp = os.path.join(scratch or tempfile.mkdtemp(prefix="colliderflow-model-"), "model.keras")
            fs.get_file(local, tmp)
            local = tmp
        model = model_lib.load_model(local)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(
            path, f"cannot be loaded as a Keras model: {str(exc).splitlines()[0][:200]}"
        ) from None
    if variable_length and model.get_layer("GRU_input").input_shape[0][1] is not None:
        flexible = model_lib.build_model(sequence_length=None)
        flexible.set_weights(model.get_weights())
        model = flexible
    return model


def predict(model, ds, timing: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(true class, softmax scores) over the whole dataset; one trace for all batch shapes (bucketed
    batches vary in length, and a retrace of the GRU costs seconds). `timing` receives the seconds
    of the first batch (tracing included) and the events and seconds after it (steady state)."""
    import tensorflow as tf

    from jobs.dltrigger_schema import GRU_COLUMN, HLF_COLUMN, N_HLF, N_PARTICLE_FEATURES

    signature = {
        GRU_COLUMN: tf.TensorSpec([None, None, N_PARTICLE_FEATURES], tf.float32),
        HLF_COLUMN: tf.TensorSpec([None, N_HLF], tf.float32),
    }
    step = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    labels, scores = [], []
    t0 = t1 = time.perf_counter()
    for x, y in ds:
        scores.append(step(x).numpy())
        labels.append(np.argmax(y.numpy(), axis=1))
        if len(labels) == 1:
            t1 = time.perf_counter()
    if timing is not None and labels:
        rest = sum(len(b) for b in labels[1:])
        timing.update(
            first_batch_seconds=t1 - t0, steady_events=rest, steady_seconds=time.perf_counter() - t1
        )
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(CLASSES)), dtype=np.float32)
    return np.concatenate(labels), np.concatenate(scores).astype(np.float32)


def plot_roc(y_true: np.ndarray, scores: np.ndarray, auc: dict[str, float | None], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, name in enumerate(CLASSES):
        if auc[name] is None:
            continue
        fpr, tpr, _ = roc_curve(y_true == k, scores[:, k])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc[name]:.4f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="One-vs-rest ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


REJECTION_AT = (0.3, 0.5, 0.7, 0.9)  # signal efficiencies at which _metrics.json quotes the rejection


def rejection_curves(y_true: np.ndarray, scores: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class (one-vs-rest, its softmax score as the trigger variable): signal efficiency and
    background rejection 1/(false positive rate) along the ROC, the form trigger studies quote. Points
    where no background passes (infinite rejection) are left out; classes with an undefined ROC too."""
    from sklearn.metrics import roc_curve

    out = {}
    for k, name in enumerate(CLASSES):
        positive = y_true == k
        if not 0 < positive.sum() < positive.size:
            continue
        fpr, tpr, _ = roc_curve(positive, scores[:, k])
        keep = fpr > 0
        out[name] = (tpr[keep], 1.0 / fpr[keep])
    return out


def rejection_at(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float | None]]:
    """Background rejection at the signal efficiencies REJECTION_AT (the best working point reaching
    at least that efficiency), per class: the numbers a trigger menu is built from."""
    out: dict[str, dict[str, float | None]] = {}
    for name, (eff, rej) in curves.items():
        out[name] = {}
        for target in REJECTION_AT:
            reached = rej[eff >= target]
            out[name][f"{target:g}"] = float(reached.max()) if reached.size else None
    return out


def plot_rejection(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str) -> None:
    """Signal efficiency vs background rejection (log scale), one curve per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (eff, rej) in curves.items():
        ax.plot(eff, rej, label=f"{name} vs rest")
    ax.set_yscale("log")
    ax.set(xlabel="signal efficiency", ylabel="background rejection (1 / false positive rate)",
           title="Trigger view: efficiency vs rejection", xlim=(0, 1))  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trained_max_particles(model: str, asked: int | None) -> int | None:
    """The particle limit to evaluate with: the one the model was trained with (its folder's
    _metrics.json, written by jobs.train), which a contradicting --max-particles cannot override (a
    model trained on 50 rows scores full lists wrongly); `asked` where the model does not say."""
    fs, path = filesystem(f"{model.rsplit('/', 1)[0] if '/' in model else '.'}/{METRICS_FILE}")
    try:
        trained = json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return asked
    if not isinstance(trained, dict) or trained.get("stage") != "train" or "max_particles" not in trained:
        return asked
    limit = trained["max_particles"]
    if asked is not None and asked != (limit or N_PARTICLES):  # no limit: all 801 rows
        raise BadInputError(
            f"--max-particles {asked}", f"contradicts the model, trained with max_particles {limit} "
            f"({path}); leave the flag out to use the model's"
        )  # fmt: skip
    if limit is not None:
        log.info("evaluating with the model's particle limit: the first %d rows", limit)
    return asked if limit is None else limit


def evaluate(args: argparse.Namespace) -> dict:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    cli.check_range(args.max_particles, "--max-particles", 1, N_PARTICLES)
    check_thresholds(args.min_auc, args.max_auc_drop)
    claim_output(args.output, [args.model, args.test])
    check_dataset(args.test, "--test")  # before TensorFlow starts: seconds, not a minute
    baseline = baseline_auc(args.baseline)
    probe_store(args.model, source=f"--model {args.model}")
    limit = trained_max_particles(args.model, args.max_particles)
    args = argparse.Namespace(**{**vars(args), "max_particles": limit, "baseline_auc": baseline})
    check_model(args.model)
    scratch = tempfile.mkdtemp(prefix="colliderflow-evaluate-")  # staged test set, model copy
    try:
        return _evaluate(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _evaluate(args: argparse.Namespace, scratch: str) -> dict:
    from sklearn.metrics import confusion_matrix

    from jobs.core.job_metrics import job_metrics
    from jobs.core.tf_dataset import (
        check_bucketing_input,
        data_loss_named,
        make_dataset,
        probe,
        resolve_format,
        worker_input,
    )

    history = read_history(args.history) if args.history else None
    fmt = resolve_format(args.test, args.format)
    # an object-store test set is staged into local scratch (TensorFlow reads local files only)
    test, _, staged = worker_input(args.test, fmt, 0, 1, os.path.join(scratch, "test"))
    with staged.named_as_remote() if staged else contextlib.nullcontext():
        check_bucketing_input(test, fmt) if args.bucketing else probe(test, fmt)
    model = load_classifier(
        args.model, variable_length=bool(args.bucketing or args.max_particles), scratch=scratch
    )
    ds = make_dataset(
        test, fmt, batch_size=args.batch_size, bucketing=args.bucketing, max_particles=args.max_particles
    )
    t0, timing = time.perf_counter(), {}
    with data_loss_named({"--test": test}, {"--test": fmt}):
        y_true, scores = predict(model, ds, timing)
    wall = time.perf_counter() - t0
    count, _ = non_finite(scores)
    if count:
        raise BadInputError(
            f"--model {args.model}", f"predicts {count:,} non-finite score(s): its weights are not "
            "finite (a diverged training); retrain it"
        )  # fmt: skip
    steady = (
        timing.get("steady_events", 0) / timing["steady_seconds"] if timing.get("steady_seconds") else None
    )
    missing = [name for k, name in enumerate(CLASSES) if not (y_true == k).any()]
    if missing:
        raise BadInputError(args.test, f"holds no events of class(es) {', '.join(missing)}; AUC is undefined")
    auc = one_vs_rest_auc(y_true, scores)
    curves = rejection_curves(y_true, scores)
    y_pred = scores.argmax(axis=1)
    plots = ["roc.png", "roc_rejection.png", *(["loss.png"] if history else [])]
    metrics = job_metrics(
        stage="evaluate",
        events=len(y_true),
        wall_seconds=wall,
        io={},
        skipped={},
        auc=auc,
        accuracy=float((y_pred == y_true).mean()),
        background_rejection=rejection_at(curves),
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=range(len(CLASSES))).tolist(),
        classes=list(CLASSES),
        model=args.model,
        test=args.test,
        format=fmt,
        bucketing=args.bucketing,
        max_particles=args.max_particles,  # the model's own (trained_max_particles)
        first_batch_seconds=timing.get("first_batch_seconds"),
        steady_events_per_second=steady,  # after the first batch (graph tracing excluded)
        plots=plots,
        staged_in=staged.summary() if staged else None,
    )
    metrics[QUALITY_KEY] = verdict(auc, args.min_auc, args.baseline_auc, args.max_auc_drop, args.baseline)
    with atomic_output_dir(args.output) as staging:
        write_json(os.path.join(staging, METRICS_FILE), metrics)
        np.savez_compressed(os.path.join(staging, "predictions.npz"), label=y_true, scores=scores)
        plot_roc(y_true, scores, auc, os.path.join(staging, "roc.png"))
        plot_rejection(curves, os.path.join(staging, "roc_rejection.png"))
        if history:
            plot_history(history, os.path.join(staging, "loss.png"))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    metrics = evaluate(build_parser().parse_args(argv))
    log.info(
        "%d events, AUC %s, accuracy %.4f, %.0f events/s",
        metrics["events"],
        {k: None if v is None else round(v, 4) for k, v in metrics["auc"].items()},
        metrics["accuracy"],
        metrics["events_per_second"] or 0.0,
    )
    return 0
