"""jobs.evaluate: the output contract, numbers checked against an independent computation on the same
events, and the bad-input policy. The model is a briefly trained real one (bucketed, 2 epochs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench.fixtures.prepared import generate, write_prepared, write_tfrecords
from jobs.core import cli

N_TRAIN, N_TEST = 900, 450


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    from jobs.train import job as train

    root = str(tmp_path_factory.mktemp("eval"))
    sets = write_prepared(root, N_TRAIN, N_TEST, seed=11, formats=("tfrecord",))
    out = os.path.join(root, "model")
    argv = ["--train", sets["train_tfrecord"], "--test", sets["test_tfrecord"], "--output", out,
            "--epochs", "2", "--bucketing", "--lr", "0.003", "--shuffle-buffer", "256"]  # fmt: skip
    assert cli.run(train.main, argv) == 0
    return {**sets, "model": f"{out}/model.keras", "history": f"{out}/history.json", "root": root}


def _run(argv: list[str]) -> int:
    from jobs.evaluate import job as evaluate

    return cli.run(evaluate.main, argv)


def test_output_contract(trained, tmp_path):
    out = tmp_path / "ev"
    argv = ["--model", trained["model"], "--test", trained["test_tfrecord"], "--output", str(out),
            "--history", trained["history"], "--bucketing"]  # fmt: skip
    assert _run(argv) == 0
    assert sorted(os.listdir(out)) == [
        "_COLLIDERFLOW", "_SUCCESS", "_metrics.json", "loss.png", "predictions.npz", "roc.png",
        "roc_rejection.png",
    ]  # fmt: skip
    for png in ("loss.png", "roc.png", "roc_rejection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((out / "_metrics.json").read_text())
    assert m["plots"] == ["roc.png", "roc_rejection.png", "loss.png"]
    rejection = m["background_rejection"]
    assert set(rejection) == {"qcd", "ttbar", "wjets"}
    for name, at in rejection.items():  # rejection falls as the efficiency asked for rises
        values = [at[e] for e in ("0.3", "0.5", "0.7", "0.9")]
        assert all(v is not None and v >= 1 for v in values) and values == sorted(values, reverse=True), name
    assert set(m["auc"]) == {"qcd", "ttbar", "wjets"}
    assert all(0.5 < v <= 1.0 for v in m["auc"].values()), m["auc"]
    assert m["events"] == N_TEST and m["events_per_second"] > 0
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == N_TEST
    assert m["accuracy"] == pytest.approx(np.trace(cm) / N_TEST)

    # independent check: the saved model on the generator's arrays (same seed, same events), in numpy
    from jobs.core.model import load_model
    from jobs.evaluate.job import one_vs_rest_auc

    events = generate(N_TEST, seed=11 + 1000)
    model = load_model(trained["model"])
    scores = model.predict({"GRU_input": events.gru[:, :40], "HLF_input": events.hlf}, verbose=0)
    expected = one_vs_rest_auc(events.classes, scores)
    assert m["auc"] == pytest.approx(expected, abs=1e-5)
    # the per-class counts of the confusion matrix are the true class counts
    assert cm.sum(axis=1).tolist() == np.bincount(events.classes, minlength=3).tolist()
    pred = np.load(out / "predictions.npz")
    assert pred["scores"].shape == (N_TEST, 3) and pred["label"].shape == (N_TEST,)


def test_unbucketed_evaluation_agrees(trained, tmp_path):
    """The full 801-row path (the reference set-up) gives the same numbers as the bucketed one."""
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["--model", trained["model"], "--test", trained["test_tfrecord"]]
    assert _run([*base, "--output", str(a), "--bucketing"]) == 0
    assert _run([*base, "--output", str(b), "--max-particles", "801"]) == 0
    ma, mb = (json.loads((d / "_metrics.json").read_text()) for d in (a, b))
    assert ma["auc"] == pytest.approx(mb["auc"], abs=1e-5)
    assert ma["confusion_matrix"] == mb["confusion_matrix"]
    assert not (b / "loss.png").exists()  # no --history, no loss curve


def test_bad_input(trained, tmp_path, capsys):
    def fails(argv: list[str], *expected: str) -> None:
        assert _run(argv) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        for text in expected:
            assert text in err, err

    out = str(tmp_path / "ev")
    test = trained["test_tfrecord"]
    fails(
        ["--model", str(tmp_path / "none.keras"), "--test", test, "--output", out],
        "none.keras",
        "no such file",
    )
    not_a_model = tmp_path / "junk.keras"
    not_a_model.write_bytes(b"not a zip")
    fails(["--model", str(not_a_model), "--test", test, "--output", out], "junk.keras", "not a Keras model")
    fails(["--model", trained["model"], "--test", str(tmp_path / "none"), "--output", out], "none")
    bad_history = tmp_path / "history.json"
    bad_history.write_text("{")
    fails(["--model", trained["model"], "--test", test, "--output", out, "--history", str(bad_history)],
          "history.json", "not JSON")  # fmt: skip
    # a test set with one class only: AUC is undefined
    data = generate(30, seed=5)
    keep = data.classes == 0
    data.hlf, data.gru, data.label, data.n_particles = (
        data.hlf[keep],
        data.gru[keep],
        data.label[keep],
        data.n_particles[keep],
    )
    one_class = write_tfrecords(data, str(tmp_path / "one_class"), shards=1)
    fails(["--model", trained["model"], "--test", one_class, "--output", out, "--bucketing"], "ttbar, wjets")
    assert not os.path.exists(out)  # nothing half-written


def test_bad_inputs_refused_before_tensorflow(tmp_path):
    """Issue 19 point 4: a missing or broken --model, or a test set copied without its stage's
    _SUCCESS, is one line within seconds (it used to take ~60 s), nothing at --output."""
    from tests.jobs.train.test_train import refused_early, stage_output_copy

    sets = write_prepared(str(tmp_path / "sets"), 20, 20, seed=3)
    out, test = str(tmp_path / "ev"), sets["test_tfrecord"]
    missing = tmp_path / "nowhere" / "model.keras"
    refused_early("jobs.evaluate", ["--model", str(missing), "--test", test, "--output", out],
                  f"--model {missing}", "no such file")  # fmt: skip
    junk = tmp_path / "model.keras"
    junk.write_bytes(b"PK\x03\x04 truncated zip")
    refused_early("jobs.evaluate", ["--model", str(junk), "--test", test, "--output", out],
                  f"--model {junk}", "not a Keras model")  # fmt: skip
    copy = stage_output_copy(sets, str(tmp_path / "copy"), success=False)
    refused_early("jobs.evaluate", ["--model", str(junk), "--test", f"{copy}/test", "--output", out],
                  f"--test {copy}/test", "_SUCCESS")  # fmt: skip
    refused_early("jobs.evaluate", ["--model", str(junk), "--test", test, "--output", out,
                                    "--max-particles", "0"], "--max-particles")  # fmt: skip


def test_auc_undefined_for_a_class_absent_from_the_test_set():
    """A tiny test set without any W+jets event: that AUC is None (not a crash), the others are computed."""
    import numpy as np

    from jobs.evaluate.job import one_vs_rest_auc

    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    assert one_vs_rest_auc(y, scores) == {"qcd": 1.0, "ttbar": 1.0, "wjets": None}


def test_rejection_curves_match_a_threshold_scan():
    """Signal efficiency and background rejection of each class, against a direct scan over every
    score threshold (numpy only): the curves the trigger view draws, and its working points."""
    from jobs.evaluate.job import rejection_at, rejection_curves

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    scores = rng.dirichlet(np.ones(3), 600) + 0.8 * np.eye(3)[y]
    scores /= scores.sum(axis=1, keepdims=True)
    curves = rejection_curves(y, scores)
    assert set(curves) == {"qcd", "ttbar", "wjets"}
    for k, name in enumerate(("qcd", "ttbar", "wjets")):
        eff, rej = curves[name]
        sig, bkg = scores[y == k, k], scores[y != k, k]
        scan = {}
        for t in np.unique(scores[:, k]):
            fpr = (bkg >= t).mean()
            if fpr > 0:
                scan[(sig >= t).mean()] = max(scan.get((sig >= t).mean(), 0), 1 / fpr)
        assert np.all(np.diff(eff) >= 0) and np.all(np.diff(rej) <= 0)  # along the ROC
        assert rej.min() == pytest.approx(1.0)  # every event passes: no rejection
        for e, r in zip(eff, rej, strict=True):  # every point of the curve is a working point
            assert r == pytest.approx(scan[e]) or r <= scan[e]
        best_50 = max(r for e, r in scan.items() if e >= 0.5)
        assert rejection_at(curves)[name]["0.5"] == pytest.approx(best_50)


def test_rejection_plot_is_a_log_scale_png(tmp_path):
    import matplotlib.image

    from jobs.evaluate.job import plot_rejection

    eff = np.linspace(0.1, 1.0, 10)
    plot_rejection({"qcd": (eff, 1 / eff**2), "ttbar": (eff, 1 / eff)}, str(tmp_path / "r.png"))
    image = matplotlib.image.imread(tmp_path / "r.png")
    assert image.shape[0] > 300 and image.shape[1] > 300


def test_quality_verdict_floor_and_drop_against_the_previous_run(trained, tmp_path, capsys, caplog):
    """--min-auc and --baseline: the evaluation stays a success and stores the verdict; a floor above
    every AUC fails it naming each class, a baseline better by more than the tolerance flags the drop."""
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["--model", trained["model"], "--test", trained["test_tfrecord"], "--bucketing"]
    assert _run([*base, "--output", str(first), "--min-auc", "0.5"]) == 0
    m1 = json.loads((first / "_metrics.json").read_text())
    assert m1["quality"]["passed"] and m1["quality"]["baseline"] is None and not m1["quality"]["below_floor"]
    # a previous run that was better by 0.05 in every class
    better = {k: min(1.0, v + 0.05) for k, v in m1["auc"].items()}
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "_metrics.json").write_text(json.dumps({"auc": better}))
    argv = [*base, "--output", str(second), "--min-auc", "0.9999", "--baseline", str(previous),
            "--max-auc-drop", "0.01"]  # fmt: skip
    assert _run(argv) == 0
    q = json.loads((second / "_metrics.json").read_text())["quality"]
    assert not q["passed"] and set(q["below_floor"]) == set(m1["auc"]) and q["baseline"] == str(previous)
    flagged = {k for k in m1["auc"] if better[k] - m1["auc"][k] > 0.01}
    assert set(q["flagged_drops"]) == flagged and flagged
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "jobs.evaluate"]
    assert any(level == "WARNING" and "is below --min-auc" in msg for level, msg in logged)
    assert any(level == "WARNING" and "dropped by" in msg for level, msg in logged)
    assert not any(level == "ERROR" for level, _ in logged)
    capsys.readouterr()
    assert _run([*base, "--output", str(tmp_path / "x"), "--min-auc", "1.5"]) == 2  # not a probability
    assert "--min-auc" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_model_says_its_particle_limit(tmp_path):
    """Issue 28: a model trained on the first 50 rows, evaluated without the flag, scored full lists
    (AUC 0.22/0.31/0.54 against 0.61/0.57/0.48). The limit comes from the model folder's
    _metrics.json; a contradicting flag is refused, an agreeing one (801 = no limit) accepted."""
    from jobs.core.errors import BadInputError
    from jobs.evaluate.job import trained_max_particles

    def model_with(limit) -> str:
        folder = tmp_path / f"m{limit}"
        folder.mkdir(exist_ok=True)
        (folder / "_metrics.json").write_text(json.dumps({"stage": "train", "max_particles": limit}))
        return str(folder / "model.keras")

    assert trained_max_particles(model_with(50), None) == 50
    assert trained_max_particles(model_with(50), 50) == 50
    with pytest.raises(
        BadInputError, match="--max-particles 20: contradicts the model, trained with max_particles 50"
    ):
        trained_max_particles(model_with(50), 20)
    assert trained_max_particles(model_with(None), None) is None
    assert trained_max_particles(model_with(None), 801) == 801
    with pytest.raises(BadInputError, match="trained with max_particles None"):
        trained_max_particles(model_with(None), 100)
    assert trained_max_particles(str(tmp_path / "elsewhere" / "model.keras"), 30) == 30  # says nothing
