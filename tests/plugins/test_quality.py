"""The model-quality gate on real evaluation outputs: a class below the floor fails the run in one line
naming it and the report, without retries; a flagged drop only warns; a pass returns the verdict."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from colliderflow.quality import QualityGateOperator, gate_line


def _evaluation(tmp_path, quality: dict) -> str:
    out = tmp_path / "evaluation"
    out.mkdir()
    (out / "_metrics.json").write_text(json.dumps({"auc": {"qcd": 0.95}, "quality": quality}))
    return str(out)


def test_below_the_floor_fails_in_one_line_without_retries(tmp_path):
    quality = {"min_auc": 0.9, "below_floor": {"wjets": 0.52, "ttbar": 0.561}, "passed": False}
    gate = QualityGateOperator(
        task_id="g", evaluation=_evaluation(tmp_path, quality), report="/r/report.html"
    )
    with pytest.raises(AirflowFailException) as failed:
        gate.execute({})
    line = str(failed.value)
    assert (
        line == "model quality: AUC below the floor 0.9: ttbar 0.5610, wjets 0.5200 (report: /r/report.html)"
    )
    assert "\n" not in line and len(line) < 500


def test_a_pass_with_a_flagged_drop_only_warns(tmp_path, caplog):
    quality = {"min_auc": 0.9, "below_floor": {}, "flagged_drops": {"qcd": 0.05}, "passed": True}
    gate = QualityGateOperator(task_id="g", evaluation=_evaluation(tmp_path, quality), report="/r")
    assert gate.execute({}) == quality
    assert gate_line(quality, "/r") is None and gate_line({}, "/r") is None  # no verdict: no gate
