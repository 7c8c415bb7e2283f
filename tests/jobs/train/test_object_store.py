"""jobs.train and jobs.evaluate with s3:// inputs and outputs (moto's S3 server on loopback), with real
TensorFlow: the same results as a local run, resume from the store after a killed run, fewer shards
than workers refused, and two training workers that share no disk (each in its own mount namespace
with a private tmpfs on /tmp, the data on s3:// only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bench.fixtures.cluster import isolated, isolated_env
from bench.fixtures.prepared import write_prepared
from jobs.core import cli
from jobs.core.storage import filesystem
from tests.conftest import ROOT as REPO_ROOT

ROOT = str(REPO_ROOT)
N_TRAIN, N_TEST = 600, 300
FAST = ["--bucketing", "--lr", "0.003", "--shuffle-buffer", "256", "--seed", "3"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    """Local sets: 4 training and 2 test shards (two workers get two and one each)."""
    root = str(tmp_path_factory.mktemp("prepared"))
    sets = write_prepared(root, N_TRAIN, N_TEST, seed=5, max_particles=16, shards=2)
    write_prepared(os.path.join(root, "four"), N_TRAIN, N_TEST, seed=5, max_particles=16, shards=4)
    return {**sets, "train_4": os.path.join(root, "four", "train_tfrecord"), "root": root}


def _upload(local: str, url: str) -> str:
    fs, path = filesystem(url)
    fs.put(local.rstrip("/") + "/", path + "/", recursive=True)
    return url


def _listing(url: str) -> list[str]:
    fs, path = filesystem(url)
    fs.invalidate_cache()
    return sorted(p[len(path) + 1 :] for p in fs.find(path))


def _read_json(url: str):
    fs, path = filesystem(url)
    with fs.open(path, "r") as f:
        return json.load(f)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "COLLIDERFLOW_WORKER_HOSTS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _train(argv: list[str]) -> None:
    from jobs.train import job as train

    assert cli.run(train.main, argv) == 0


def _evaluate(argv: list[str]) -> None:
    from jobs.evaluate import job as evaluate

    assert cli.run(evaluate.main, argv) == 0


def test_s3_in_and_out_equals_local(prepared, bucket, tmp_path):
    """The same training and evaluation, once on local paths and once with every input and output on
    s3://: identical event counts and learning-rate schedule, losses and AUC equal within float
    tolerance (the staged shards keep their names, hence the same read order and shuffles)."""
    s3 = f"s3://{bucket}"
    train_url = _upload(prepared["train_tfrecord"], f"{s3}/tfrecords/train")
    test_url = _upload(prepared["test_tfrecord"], f"{s3}/tfrecords/test")
    local_out = str(tmp_path / "model")
    _train(["--train", prepared["train_tfrecord"], "--test", prepared["test_tfrecord"],
            "--output", local_out, "--epochs", "2", *FAST])  # fmt: skip
    _train(["--train", train_url, "--test", test_url, "--output", f"{s3}/model", "--epochs", "2", *FAST])

    files = _listing(f"{s3}/model")
    assert {"_SUCCESS", "_metrics.json", "history.json", "model.keras", "checkpoints/checkpoint",
            "checkpoints/history.json"} <= set(files), files  # fmt: skip
    assert any(f.startswith("tensorboard/") for f in files) and not [f for f in files if ".tmp" in f]
    assert len([f for f in files if f.startswith("checkpoints/ckpt-") and f.endswith(".index")]) == 2
    remote = _read_json(f"{s3}/model/history.json")
    local = json.loads((tmp_path / "model/history.json").read_text())
    assert [(e["epoch"], e["events"], e["val_events"], e["lr"]) for e in remote] == [
        (e["epoch"], e["events"], e["val_events"], e["lr"]) for e in local
    ]
    for r, lo in zip(remote, local, strict=True):
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
            assert r[key] == pytest.approx(lo[key], rel=1e-4, abs=1e-5), (key, r[key], lo[key])
    metrics = _read_json(f"{s3}/model/_metrics.json")
    assert metrics["staged_in"]["train"]["files"] == 2 and metrics["staged_in"]["train"]["bytes"] > 0

    _evaluate(["--model", f"{local_out}/model.keras", "--test", prepared["test_tfrecord"],
               "--output", str(tmp_path / "ev"), "--bucketing"])  # fmt: skip
    _evaluate(["--model", f"{s3}/model/model.keras", "--test", test_url, "--output", f"{s3}/evaluation",
               "--history", f"{s3}/model/history.json", "--bucketing"])  # fmt: skip
    ev_local = json.loads((tmp_path / "ev/_metrics.json").read_text())
    ev_s3 = _read_json(f"{s3}/evaluation/_metrics.json")
    assert ev_s3["events"] == ev_local["events"] == N_TEST
    assert ev_s3["auc"] == pytest.approx(ev_local["auc"], abs=1e-3)
    assert ev_s3["staged_in"]["files"] == 2
    assert {"_SUCCESS", "loss.png", "predictions.npz", "roc.png"} <= set(_listing(f"{s3}/evaluation"))


def test_s3_resume_after_a_killed_run(prepared, bucket):
    """SIGKILL after the first epoch's checkpoint reached the store, rerun with the same output on a
    machine that has nothing of the first run: training continues from the store's checkpoint."""
    s3 = f"s3://{bucket}"
    args = ["--train", _upload(prepared["train_tfrecord"], f"{s3}/train"),
            "--test", _upload(prepared["test_tfrecord"], f"{s3}/test"),
            "--output", f"{s3}/model", "--epochs", "3", *FAST]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    fs, path = filesystem(f"{s3}/model/checkpoints/checkpoint")  # pushed after the history
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        fs.invalidate_cache()
        if fs.exists(path):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    files = _listing(f"{s3}/model")
    assert "model.keras" not in files and "_SUCCESS" not in files, "the run finished before it was killed"
    done_before = len(_read_json(f"{s3}/model/checkpoints/history.json"))
    assert 1 <= done_before < 3

    _train(args)
    metrics = _read_json(f"{s3}/model/_metrics.json")
    assert metrics["resumed_from"].startswith(f"{s3}/model/checkpoints/ckpt-"), metrics["resumed_from"]
    assert metrics["initial_epoch"] == done_before and metrics["epochs_run"] == 3 - done_before
    assert [e["epoch"] for e in _read_json(f"{s3}/model/history.json")] == [1, 2, 3]
    assert "_SUCCESS" in _listing(f"{s3}/model")


def test_s3_fewer_shards_refused_and_unstaged_urls_explained(prepared, bucket, capsys):
    from jobs.train import job as train

    train_url = _upload(prepared["train_tfrecord"], f"s3://{bucket}/train")
    test_url = _upload(prepared["test_tfrecord"], f"s3://{bucket}/test")
    argv = ["--train", train_url, "--test", test_url, "--output", f"s3://{bucket}/m", "--workers", "3"]
    assert cli.run(train.main, argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and train_url in err and "2 shard(s) for 3 workers" in err, err
    fs, path = filesystem(f"s3://{bucket}/m")
    assert not fs.exists(path)  # refused before anything was written

    # an output bucket that does not exist: one line before any training
    argv = ["--train", train_url, "--test", test_url, "--output", "s3://cf-no-such-bucket/m"]
    assert cli.run(train.main, argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--output s3://cf-no-such-bucket/m" in err and "does not exist" in err

    # TensorFlow cannot open s3:// itself: said so, naming the URL (not reported as a schema mismatch)
    from jobs.core.errors import BadInputError
    from jobs.core.tf_dataset import probe

    with pytest.raises(BadInputError, match="TensorFlow cannot open s3:// objects itself") as caught:
        probe(train_url, "tfrecord")
    assert caught.value.source == train_url


def _private_tmp_works() -> bool:
    """Private mount namespaces (bench/fixtures/cluster.py's `isolated`) need root and unshare; no Java
    here."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(isolated(["true"]), env=isolated_env(), capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _private_tmp_works(), reason="needs root and unshare (private mount namespaces)")
def test_two_workers_without_a_shared_disk(prepared, bucket, tmp_path):
    """Two TF workers, each in its own mount namespace with a private tmpfs on /tmp (this test's files
    are invisible there), data and output on s3://: each stages only its own shards, the workers sum
    their event counts (no _summary.json), train in lockstep and the chief's output lands on S3."""
    from jobs.train.cluster import launch_local_workers

    marker = tmp_path / "visible-here"
    marker.write_text("")
    env = isolated_env(_env())  # TMPDIR=/tmp, the private one; the checkout and venv stay visible
    assert subprocess.run(isolated(["test", "!", "-e", str(marker)]), env=env).returncode == 0

    s3 = f"s3://{bucket}"
    argv = ["--train", _upload(prepared["train_4"], f"{s3}/train"),
            "--test", _upload(prepared["test_tfrecord"], f"{s3}/test"),
            "--output", f"{s3}/model", "--epochs", "2", "--batch-size", "64", *FAST]  # fmt: skip
    assert launch_local_workers("jobs.train", argv, 2, env=env, wrapper=isolated([])) == 0

    metrics = _read_json(f"{s3}/model/_metrics.json")
    assert metrics["workers"] == 2 and metrics["global_batch_size"] == 128
    assert metrics["staged_in"]["train"]["files"] == 2 and metrics["staged_in"]["test"]["files"] == 1
    history = _read_json(f"{s3}/model/history.json")
    steps = -(-N_TRAIN // 128)
    assert [e["events"] for e in history] == [steps * 128] * 2  # both workers' events, every step full
    assert {"_SUCCESS", "model.keras", "checkpoints/checkpoint"} <= set(_listing(f"{s3}/model"))
