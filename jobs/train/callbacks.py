"""Keras callbacks of jobs.train: the per-epoch record behind history.json and the checkpointing that
lets a killed run resume. Checkpoints are tf.train.CheckpointManager checkpoints (model, optimizer,
number of completed epochs) rather than BackupAndRestore, because BackupAndRestore saves either every
epoch or every K steps, not both, and with steps it cannot tell an epoch-end save from a mid-epoch
one when the epoch length is unknown (TFRecord shards carry no count).
"""

from __future__ import annotations

# isort: off
from jobs.core import tf_env  # noqa: F401  (before TensorFlow)
# isort: on

import json
import math
import os
import time
from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from jobs.core.errors import BadInputError
from jobs.core.storage import write_json

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def load_history(path: str) -> list[dict]:
    """The running history.json of a checkpoint directory ([] when there is none yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


class FiniteLoss(keras.callbacks.Callback):
    """Stop a run whose loss is no longer finite, before that epoch is recorded or checkpointed (put it
    first): NaN weights are no model. Checked per epoch, not per batch, to keep the steps asynchronous."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise BadInputError(
                    self.source, f"the {key} became {float(value)} in epoch {epoch + 1}: a non-finite input "
                    "value or a learning rate too large; no model was written"
                )  # fmt: skip


class EpochRecorder(keras.callbacks.Callback):
    """One history entry per epoch (metrics, learning rate, events/s of the training part, seconds),
    saved by the chief after every epoch so that a resumed run continues the same history. Entries
    of epochs the checkpoint does not cover are dropped on resume."""

    def __init__(self, path: str | None, previous: list[dict]):
        super().__init__()
        self.path = path
        self.entries = list(previous)
        self._t0 = self._t_train_end = 0.0
        self._cpu0 = self._cpu_train_end = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.entries = [e for e in self.entries if e["epoch"] <= epoch]
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        self._t_train_end = self._cpu_train_end = 0.0

    def on_test_begin(self, logs=None):
        if not self._t_train_end:  # fit's validation run: training part of the epoch is over
            self._t_train_end, self._cpu_train_end = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        train_s = (self._t_train_end or now) - self._t0
        cpu_s = (self._cpu_train_end or time.process_time()) - self._cpu0
        events = float(logs.get("events", 0.0))
        entry = {"epoch": epoch + 1}
        entry.update({k: float(logs[k]) for k in HISTORY_KEYS if k in logs})
        entry.update(
            {
                "events": int(events),
                "val_events": int(logs.get("val_events", 0.0)),
                "events_per_second": events / train_s if train_s > 0 else None,
                "train_seconds": train_s,
                # CPU seconds of this process in the training part: events per CPU-second is a
                # per-core figure that holds up on a shared machine (wall-clock rates do not)
                "train_cpu_seconds": cpu_s,
                "wall_seconds": now - self._t0,
                "lr": float(keras.backend.get_value(self.model.optimizer.learning_rate)),
            }
        )
        self.entries.append(entry)
        if self.path:
            write_json(self.path, self.entries)


class Checkpointer(keras.callbacks.Callback):
    """Saves (model, optimizer, completed epochs) after every epoch and, with every_steps, every K
    training steps. Every worker saves (variables that sync on read need all workers): the chief
    into DIR/checkpoints, the others into their scratch directory. A mid-epoch checkpoint holds the
    number of *completed* epochs, so a resume from it re-runs that epoch starting from its weights.
    `after_save` runs after each save (the chief pushes an object-store output's working copy)."""

    def __init__(self, checkpoint: tf.train.Checkpoint, epoch_var: tf.Variable, directory: str,
                 max_to_keep: int = 2, every_steps: int | None = None,
                 after_save: Callable[[], None] | None = None):  # fmt: skip
        super().__init__()
        self.after_save = after_save
        self.epoch_var = epoch_var
        self.every_steps = every_steps
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep)
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.every_steps and self._steps % self.every_steps == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self._save()

    def _save(self) -> None:
        self.manager.save()
        if self.after_save:  # e.g. push the checkpoint (and the history before it) to an object store
            self.after_save()
