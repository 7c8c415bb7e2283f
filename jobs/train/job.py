"""Train the Inclusive Classifier (GRU + high-level features) on a prepared DL-trigger set.

    python -m jobs.train --train URL --test URL --output DIR [--epochs 6] [--batch-size 128]
        [--bucketing] [--workers N] [--checkpoint-every-steps K] ...

One process (CPU or GPU), or MultiWorkerMirroredStrategy when TF_CONFIG (or COLLIDERFLOW_WORKER_HOSTS
plus a worker index) describes a cluster; `--workers N` runs N local worker processes on loopback.
Outputs under DIR: model.keras (chief), history.json, _metrics.json, tensorboard/, checkpoints/.
A rerun with the same DIR resumes from DIR/checkpoints. Inputs and DIR may be object-store URLs
(s3://...): each worker stages its own shards in, the chief pushes DIR after every checkpoint
(jobs.core.tf_staging). See docs/dl-trigger-training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

from jobs.core import cli
from jobs.core.commit import claim_output, mark_output, relation
from jobs.core.errors import BadInputError, UsageError
from jobs.core.storage import METRICS_FILE, SUCCESS_MARKER, filesystem, is_local, write_json
from jobs.core.tf_input_check import check_dataset
from jobs.core.tf_staging import (
    PARQUET_SUFFIXES,
    TFRECORD_SUFFIXES,
    OutputMirror,
    assign_shards,
    list_data_files,
)
from jobs.dltrigger_schema import N_PARTICLES
from jobs.train.cluster import ClusterInfo, cluster_info, launch_local_workers
from jobs.train.defaults import AUTO, batch_arg, lr_arg, relative_steps, resolve

log = logging.getLogger("jobs.train")

FINAL_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
# far beyond the reference's 6 or 50; a typo of 10^6 would hold a worker for weeks
MAX_EPOCHS = 10_000


def parse_lr_after(text: str) -> list[tuple[int, float]]:
    """'2:0.0002,4:0.0001' -> [(2, 0.0002), (4, 0.0001)]: after epoch 2 (1-based) use 0.0002, ..."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        epoch, sep, lr = item.partition(":")
        try:
            out.append((int(epoch), float(lr)))
        except ValueError:
            sep = ""
        if not sep or out[-1][0] < 1 or not 0 < out[-1][1] < math.inf:
            raise UsageError(f"--lr-after: expected EPOCH:LR entries with EPOCH >= 1, LR > 0, got {item!r}")
    return sorted(out)


def learning_rate(epoch0: int, base: float, after: list[tuple[int, float]], scale: float) -> float:
    """The reference step schedule for a 0-based epoch: base until the first step, then each step's lr."""
    lr = base
    for epoch, value in after:
        if epoch0 >= epoch:
            lr = value
    return lr * scale


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(
        "train",
        __doc__.split("\n\n")[0],
        "python -m jobs.train --train out/tfrecords/train --test out/tfrecords/test --output out/model "
        "--bucketing --workers 2",
    )
    p.add_argument("--train", required=True, help="training set: TFRecord shards or Parquet (dir/glob/URL)")
    p.add_argument("--test", required=True, help="validation/test set, same formats")
    p.add_argument(
        "--output", required=True, help="output directory or object-store URL (s3://...); resumes from it"
    )
    p.add_argument(
        "--format", default="auto", choices=["auto", "tfrecord", "parquet"], help="format of both sets"
    )
    p.add_argument("--epochs", type=int, default=6, help="epochs in total (a resumed run continues)")
    p.add_argument(
        "--batch-size",
        type=batch_arg,
        default=AUTO,
        help="per worker; global batch = this x workers. auto (default): the reference's 128 from ~5,000 "
        "training events per worker on, smaller for smaller sets (jobs.train.defaults)",
    )
    p.add_argument(
        "--lr",
        type=lr_arg,
        default=AUTO,
        help="base Adam learning rate (x workers); auto (default): 0.0005 x 128 / batch size",
    )
    p.add_argument(
        "--lr-after",
        default=None,
        help="step schedule EPOCH:LR,... (x workers): after EPOCH (1-based) use LR (default: the "
        "reference's steps to 40 %% of --lr after epoch 2 and 20 %% after epoch 4)",
    )
    p.add_argument("--no-lr-scaling", action="store_true", help="do not multiply learning rates by workers")
    p.add_argument(
        "--bucketing", action="store_true", help="batch by real particle count, GRU over real rows"
    )
    p.add_argument(
        "--max-particles",
        type=int,
        default=None,
        help="keep only the first K particle rows (exact when no event has more than K real rows)",
    )
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (meant for GPUs)")
    p.add_argument(
        "--checkpoint-every-steps",
        type=int,
        default=None,
        metavar="K",
        help="also checkpoint every K steps (default: at the end of every epoch only)",
    )
    p.add_argument("--workers", type=int, default=1, help="N > 1: launch N local worker processes")
    p.add_argument("--seed", type=int, default=42, help="seed of weights, shuffling and dropout")
    p.add_argument("--shuffle-buffer", type=int, default=2048, help="events (each ~60 kB)")
    p.add_argument(
        "--train-events", type=int, default=None, help="multi-worker: skip counting the training set"
    )
    p.add_argument("--test-events", type=int, default=None, help="multi-worker: skip counting the test set")
    p.add_argument("--worker-weights-dir", default=None, help="diagnostics: each worker saves final weights")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before TensorFlow starts: the numbers, the output, the inputs
    (jobs.core.tf_input_check); a one-line error in seconds, nothing written."""
    for name in ("epochs", "workers", "shuffle_buffer"):
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    cli.check_range(args.epochs, "--epochs", 1, MAX_EPOCHS)
    cli.check_range(args.max_particles, "--max-particles", 1, N_PARTICLES)
    if args.checkpoint_every_steps is not None and args.checkpoint_every_steps < 1:
        raise UsageError(f"--checkpoint-every-steps must be >= 1, got {args.checkpoint_every_steps}")
    claim_output(args.output, [args.train, args.test], inside=True)
    if relation(args.test, args.train) == "is the same folder as":
        raise UsageError(
            f"--test {args.test}: is the --train set; evaluating on the training events says nothing"
        )
    if args.lr_after:
        parse_lr_after(args.lr_after)
    check_dataset(args.train, "--train", args.format)
    check_dataset(args.test, "--test", args.format)


def _check_shards(args: argparse.Namespace, workers: int) -> None:
    """Every worker reads only its own shards: refuse fewer shards than workers before any launch."""
    if workers <= 1:
        return
    for url in (args.train, args.test):
        if args.format == "parquet":
            files = list_data_files(url, PARQUET_SUFFIXES)
        else:
            try:
                files = list_data_files(url, TFRECORD_SUFFIXES)
            except BadInputError:
                if args.format == "tfrecord":
                    raise
                files = list_data_files(url, PARQUET_SUFFIXES)
        assign_shards(files, 0, workers, url)


def _strategy(cluster: ClusterInfo):
    """MultiWorkerMirroredStrategy when there is a cluster (created before any other TF op)."""
    import tensorflow as tf

    if cluster.num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _sum_over_workers(strategy, value: int) -> int:
    """The sum of one number per worker (an all-reduce; each worker's replicas all contribute it). One
    process (the default strategy, no workers to reduce over): the number itself."""
    import tensorflow as tf

    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has none
        return value
    per_replica = strategy.run(lambda: tf.constant(float(value), tf.float64))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return round(float(total.numpy())) // len(devices)


def train(args: argparse.Namespace, cluster: ClusterInfo) -> dict:
    """Train, write the outputs (chief), return metrics. Every process has a local scratch directory
    (removed at the end) for its staged input shards, the working copy of an object-store output, and
    (non-chief workers) its own copies of checkpoints, TensorBoard events and the model."""
    scratch = tempfile.mkdtemp(prefix="colliderflow-train-")
    try:
        return _train(args, cluster, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.mixed_precision:  # the policy is process-global: do not leak it to later in-process use
            from jobs.core.model import keras

            keras.mixed_precision.set_global_policy("float32")


def _train(args: argparse.Namespace, cluster: ClusterInfo, scratch: str) -> dict:
    strategy = _strategy(cluster)  # first: collective ops must be configured at startup

    import numpy as np
    import tensorflow as tf

    from jobs.core import model as model_lib
    from jobs.core.job_metrics import job_metrics
    from jobs.core.tf_dataset import (
        check_bucketing_input,
        count_events,
        count_from_summary,
        data_loss_named,
        make_dataset,
        probe,
        resolve_format,
        worker_input,
    )
    from jobs.train.callbacks import Checkpointer, EpochRecorder, FiniteLoss, load_history

    keras = model_lib.keras
    keras.utils.set_random_seed(args.seed)
    # an object-store output is worked on in a local copy that is pushed after every checkpoint
    mirror = None if is_local(args.output) else OutputMirror(os.path.join(scratch, "output"), args.output)
    out = mirror.local_dir if mirror else os.path.abspath(args.output.removeprefix("file://"))
    private = None if cluster.is_chief else os.path.join(scratch, "worker")  # non-chief's own copies
    ckpt_dir = os.path.join(out, "checkpoints")
    if mirror:  # (its store was probed for writing by _check_args, before any work)
        pulled = mirror.pull("checkpoints")  # resume from the store: every worker fetches the state
        log.info("%d checkpoint file(s) from %s/checkpoints", pulled, args.output)

    inputs = {}
    for name, url in (("train", args.train), ("test", args.test)):
        fmt = resolve_format(url, args.format)
        local, shard, staged = worker_input(
            url, fmt, cluster.index, cluster.num_workers, os.path.join(scratch, name)
        )
        with staged.named_as_remote() if staged else contextlib.nullcontext():
            check_bucketing_input(local, fmt) if args.bucketing else probe(local, fmt)
        inputs[name] = {"url": url, "fmt": fmt, "local": local, "shard": shard, "staged": staged}
    train_fmt, test_fmt = inputs["train"]["fmt"], inputs["test"]["fmt"]
    if cluster.is_chief:
        mark_output(args.output)  # the inputs are good: the model folder is a colliderflow output
    os.makedirs(ckpt_dir, exist_ok=True)  # the first thing this run writes into it

    n_replicas = strategy.num_replicas_in_sync
    scale = 1.0 if args.no_lr_scaling else float(n_replicas)

    def dataset(name: str, shuffle: bool, ctx: tf.distribute.InputContext | None = None):
        """Single process: one pass over the set per epoch. Multi-worker (ctx given): this worker's
        own shards, repeated, in per-replica batches (distribute_datasets_from_function does
        no re-batching and no auto-sharding)."""
        given = inputs[name]
        return make_dataset(
            given["local"],
            given["fmt"],
            batch_size=ctx.get_per_replica_batch_size(global_batch) if ctx else args.batch_size,
            shuffle_buffer=args.shuffle_buffer if shuffle else 0,
            seed=args.seed + (ctx.input_pipeline_id if ctx else 0),
            bucketing=args.bucketing,
            max_particles=args.max_particles,
            shard=given["shard"],
            repeat=ctx is not None,
            mix_classes=shuffle,  # training batches: each with the classes in proportion
        )

    def n_events(name: str) -> int:
        """The whole set's count: _summary.json when there is one, else each worker counts its own
        shards and the counts are summed over the workers."""
        given = inputs[name]
        known = count_from_summary(given["url"])
        if known is not None:
            return known
        return _sum_over_workers(strategy, count_events(given["local"], given["fmt"], shard=given["shard"]))

    if AUTO in (args.batch_size, args.lr):
        n_train = args.train_events or n_events("train")
        asked = (args.batch_size, args.lr)
        args.batch_size, args.lr = resolve(args.batch_size, args.lr, n_train, cluster.num_workers)
        log.info("--batch-size %s --lr %s for %d training events: batch %d per worker, lr %g",
                 *asked, n_train, args.batch_size, args.lr)  # fmt: skip
    lr_after = parse_lr_after(args.lr_after) if args.lr_after else relative_steps(args.lr)
    global_batch = args.batch_size * n_replicas

    steps = {}
    if cluster.num_workers > 1:
        # Workers must run the same number of steps: when one runs dry first, TF feeds it an empty
        # batch whose unknown dimensions are 0, and a GRU over 0 time steps fails. So each worker
        # cycles through its shards and an epoch is ceil(events / global batch) steps.
        n_train = args.train_events or n_events("train")
        n_test = args.test_events or n_events("test")
        steps = {
            "steps_per_epoch": max(1, -(-n_train // global_batch)),
            "validation_steps": max(1, -(-n_test // global_batch)),
        }
        log.info("%d training / %d test events -> %s per epoch", n_train, n_test, steps)
        train_ds = strategy.distribute_datasets_from_function(lambda c: dataset("train", True, c))
        test_ds = strategy.distribute_datasets_from_function(lambda c: dataset("test", False, c))
    else:
        train_ds = dataset("train", True)
        test_ds = dataset("test", False)

    if args.mixed_precision:
        if not tf.config.list_physical_devices("GPU"):
            log.warning("--mixed-precision without a GPU: float16 on a CPU is slower, not faster")
        keras.mixed_precision.set_global_policy("mixed_float16")
    seq_len = None if (args.bucketing or args.max_particles) else model_lib.N_PARTICLES
    with strategy.scope():
        model = model_lib.compile_model(
            model_lib.build_model(sequence_length=seq_len),
            learning_rate=learning_rate(0, args.lr, lr_after, scale),
        )
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, completed_epochs=epoch_var)
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        if mirror:  # name the checkpoint where it is kept, not the scratch copy
            latest = f"{mirror.url}/checkpoints/{os.path.basename(latest)}"
        log.info("resuming from %s (%d epoch(s) completed)", latest, int(epoch_var.numpy()))
    initial_epoch = int(epoch_var.numpy())
    if initial_epoch >= args.epochs and _has_model(args.output):
        log.info(
            "model folder already holds %d epoch(s) >= --epochs %d: nothing to train, existing model kept",
            initial_epoch,
            args.epochs,
        )
        return {"epochs_run": 0, "initial_epoch": initial_epoch, "kept_existing_model": True}
    if mirror and cluster.is_chief:
        mirror.remove(SUCCESS_MARKER)  # the inputs are good: the output changes from here on

    history_path = os.path.join(ckpt_dir, "history.json")
    recorder = EpochRecorder(history_path if cluster.is_chief else None, load_history(history_path))
    recorder.entries = recorder.entries[:initial_epoch]
    tb_dir = os.path.join(private or out, "tensorboard")
    callbacks = [
        FiniteLoss(f"--train {args.train}"),  # first: a NaN epoch is neither recorded nor checkpointed
        keras.callbacks.LearningRateScheduler(lambda e, _lr: learning_rate(e, args.lr, lr_after, scale)),
        recorder,  # history first, checkpoint second: a resume never lacks the entry of a saved epoch
        Checkpointer(
            checkpoint,
            epoch_var,
            os.path.join(private, "checkpoints") if private else ckpt_dir,
            max_to_keep=1 if private else 2,
            every_steps=args.checkpoint_every_steps,
            after_save=mirror.push if mirror and cluster.is_chief else None,
        ),
        keras.callbacks.TensorBoard(tb_dir, update_freq="epoch", profile_batch=0, write_graph=False),
    ]
    t0 = time.perf_counter()
    sets = {f"--{k}": v["local"] for k, v in inputs.items()}
    with data_loss_named(sets, {f"--{k}": v["fmt"] for k, v in inputs.items()}):
        if initial_epoch < args.epochs:
            model.fit(
                train_ds,
                validation_data=test_ds,
                epochs=args.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=2 if cluster.is_chief else 0,
                **steps,
            )
    wall = time.perf_counter() - t0

    # every worker saves (the save may read sync-on-read variables); only the chief's copy is kept
    if private:
        os.makedirs(private, exist_ok=True)
    tmp_model = os.path.join(private or out, f".model.keras.tmp-{os.getpid()}.keras")
    model.save(tmp_model)
    if cluster.is_chief:
        os.replace(tmp_model, os.path.join(out, "model.keras"))
    if args.worker_weights_dir:
        os.makedirs(args.worker_weights_dir, exist_ok=True)
        path = os.path.join(args.worker_weights_dir, f"worker-{cluster.index}.npz")
        np.savez(path, *[np.asarray(w) for w in model.get_weights()])

    history = recorder.entries
    this_run = [e for e in history if e["epoch"] > initial_epoch]
    events = sum(e["events"] for e in this_run)
    train_s = sum(e["train_seconds"] for e in this_run)
    metrics = job_metrics(
        stage="train",
        events=events,
        wall_seconds=wall,
        io={},
        skipped={},
        training_events_per_second=events / train_s if train_s > 0 else None,
        epochs=args.epochs,
        initial_epoch=initial_epoch,
        resumed_from=latest,
        epochs_run=len(this_run),
        workers=cluster.num_workers,
        replicas=n_replicas,
        global_batch_size=global_batch,
        batch_size=args.batch_size,  # per worker, `auto` resolved
        learning_rate=args.lr,  # the base rate, `auto` resolved (x workers unless --no-lr-scaling)
        bucketing=args.bucketing,
        max_particles=args.max_particles,
        mixed_precision=args.mixed_precision,
        parameters=int(model.count_params()),
        train=args.train,
        test=args.test,
        format={"train": train_fmt, "test": test_fmt},
        staged_in={k: v["staged"].summary() for k, v in inputs.items() if v["staged"]},
        final={k: v for k, v in (history[-1] if history else {}).items() if k in FINAL_KEYS},
    )
    if cluster.is_chief:
        write_json(os.path.join(out, "history.json"), history)
        write_json(os.path.join(out, METRICS_FILE), metrics)
        if mirror:
            mirror.push()
            mirror.put_marker(SUCCESS_MARKER)  # last: the output is complete
    return metrics


def _has_model(output: str) -> bool:
    fs, path = filesystem(output)
    return fs.exists(f"{path.rstrip('/')}/model.keras")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    cluster = cluster_info(os.environ)
    _check_shards(args, cluster.num_workers if cluster.tf_config is not None else args.workers)
    if cluster.tf_config is None and args.workers > 1:
        return launch_local_workers("jobs.train", list(argv) if argv is not None else _argv(), args.workers)
    if cluster.tf_config is not None:
        import json

        os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config)
    metrics = train(args, cluster)
    if not metrics.get("kept_existing_model"):
        log.info("trained %d epoch(s) this run; events/s %s", metrics["epochs_run"],
                 metrics["training_events_per_second"])  # fmt: skip
    return 0


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]
