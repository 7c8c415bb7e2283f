"""The local backend's side of the exit-code contract (docs/errors.md): a stage's exit 2 fails the task
without retries, exit 1 (an infrastructure fault) stays an ordinary, retried failure."""

from __future__ import annotations

import subprocess
import sys

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from colliderflow.backends.local import LocalStageOperator
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    subprocess.run(
        [sys.executable, "-m", "jobs.generate", "nanoaod", "--events", "200", "--output", str(run / "nano")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return run


@pytest.mark.parametrize(
    ("gateway", "no_retries", "phrase"),
    [("foo://x", True, "--pushgateway"), ("http://127.0.0.1:9", False, "127.0.0.1:9")],
    ids=["bad-input-exit-2", "gateway-down-exit-1"],
)
def test_exit_code_decides_the_retries(run_dir, tmp_path, gateway, no_retries, phrase):
    op = LocalStageOperator(
        task_id="collect_metrics",
        module="metrics",
        args=["--run-dir", str(run_dir), "--output", str(tmp_path / "report"), "--pushgateway", gateway],
    )
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert isinstance(err.value, AirflowFailException) == no_retries, err.value
    assert phrase in str(err.value) and "error:" in str(err.value)
    assert not (tmp_path / "report").exists()
