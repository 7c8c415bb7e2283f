"""`--batch-size auto` / `--lr auto`: the reference's 128 and 5e-4 from 5,120 training events per worker
on, a smaller power-of-two batch (>= 16, ~40 steps an epoch) with a proportionally higher rate below;
explicit values pass through; anything else is refused naming the option. (That auto learns where the
reference does not is the dl_trigger DAG test, on a demo sample with the form's defaults.)"""

from __future__ import annotations

import pytest

from jobs.core.errors import UsageError
from jobs.train.defaults import AUTO, batch_arg, lr_arg, relative_steps, resolve


@pytest.mark.parametrize(
    ("n_train", "workers", "batch", "lr"),
    [(1_187, 1, 32, 2e-3), (100, 1, 16, 4e-3), (3_000, 1, 64, 1e-3), (5_120, 1, 128, 5e-4),
     (5_000_000, 1, 128, 5e-4), (1_187, 2, 16, 4e-3), (5_000_000, 4, 128, 5e-4)],
)  # fmt: skip
def test_auto_resolves_by_training_set_size(n_train, workers, batch, lr):
    assert resolve(AUTO, AUTO, n_train, workers) == (batch, pytest.approx(lr))
    steps_per_epoch = n_train / workers / batch
    assert batch == 128 or 20 <= steps_per_epoch <= 80 or batch == 16


def test_explicit_values_pass_and_only_auto_is_filled():
    assert resolve(128, 0.0005, 1_187, 1) == (128, 0.0005)  # the reference, reproduced exactly
    assert resolve(64, AUTO, 1_187, 1) == (64, pytest.approx(1e-3))
    assert resolve(AUTO, 0.01, 1_187, 1) == (32, 0.01)
    assert relative_steps(5e-4) == [(2, pytest.approx(2e-4)), (4, pytest.approx(1e-4))]  # the reference's


@pytest.mark.parametrize(
    ("parse", "text"), [(batch_arg, "0"), (batch_arg, "big"), (lr_arg, "-1"), (lr_arg, "")]
)
def test_bad_values_are_refused_naming_the_option(parse, text):
    with pytest.raises(UsageError, match="--batch-size|--lr"):
        parse(text)
    assert batch_arg("auto") == AUTO and batch_arg("64") == 64 and lr_arg("0.003") == 0.003
