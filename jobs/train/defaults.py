"""Training defaults that learn on any training-set size. The reference settings (batch 128, Adam 5e-4,
stepped to 40 % after epoch 2 and 20 % after epoch 4) are tuned for its millions of events: on the
demo's ~1,200 training events they make 9 optimizer steps an epoch and the classifier barely learns
(AUC 0.74 / 0.56 / 0.52 after 6 epochs). `auto` keeps the reference from ~5,000 training events on
(batch 128 at 40 steps per epoch) and below that takes the power-of-two batch nearest to one fortieth of
the set (at least 16), with the rate raised in proportion (5e-4 × 128 / batch): on the demo sample
batch 32 and 2e-3, AUC 0.98 / 0.96 / 0.94 after the same 6 epochs (docs/dl-trigger-training.md)."""

from __future__ import annotations

import math

from jobs.core.errors import UsageError

AUTO = "auto"
REFERENCE_BATCH = 128
REFERENCE_LR = 5e-4
STEPS_PER_EPOCH = 40  # the fewest optimizer steps an epoch that auto aims for
MIN_BATCH = 16
# the reference's step schedule as fractions of the base rate: after epoch 2 (1-based) 0.4, after 4 0.2
REFERENCE_STEPS = ((2, 0.4), (4, 0.2))


def batch_arg(text: str) -> int | str:
    """--batch-size: a positive integer or `auto`."""
    return _positive_or_auto(text, int, "--batch-size")


def lr_arg(text: str) -> float | str:
    """--lr: a positive number or `auto`."""
    return _positive_or_auto(text, float, "--lr")


def _positive_or_auto(text: str, kind: type, option: str):
    if text == AUTO:
        return AUTO
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not 0 < value < math.inf:  # NaN fails this too
        raise UsageError(f"{option} must be a positive finite number or auto, got {text!r}")
    return value


def auto_batch(n_train: int) -> int:
    """The batch for `n_train` training events (per worker: the events each worker reads): the
    reference's 128 from 5,120 events on, else the power of two nearest to n_train / 40, at least 16."""
    wanted = max(n_train, 1) / STEPS_PER_EPOCH
    return int(min(REFERENCE_BATCH, max(MIN_BATCH, 2 ** round(math.log2(max(wanted, 1.0))))))


def resolve(batch: int | str, lr: float | str, n_train: int, workers: int) -> tuple[int, float]:
    """(per-worker batch, base learning rate) with `auto` resolved for `n_train` events on `workers`
    (each reading its share; the rate is then scaled by the workers like any --lr)."""
    if batch == AUTO:
        batch = auto_batch(-(-n_train // max(workers, 1)))
    if lr == AUTO:
        lr = REFERENCE_LR * REFERENCE_BATCH / batch
    return int(batch), float(lr)


def relative_steps(base: float) -> list[tuple[int, float]]:
    """The reference schedule scaled to `base`."""
    return [(epoch, base * factor) for epoch, factor in REFERENCE_STEPS]
