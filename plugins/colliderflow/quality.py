"""The model-quality gate, the last task of dl_trigger: reads the verdict jobs.evaluate stored in its
_metrics.json (per-class AUC against the `min_auc` Param and against the previous successful run) and
fails the run in one line, without retries, when a class is below the floor. It runs after the run
report, so a model that did not learn still gets its report, with the failing classes in red."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

TASK_ID = "quality_gate"


def gate_line(quality: dict[str, Any], report: str) -> str | None:
    """The one line that fails the run, or None when the model passes."""
    if quality.get("passed", True):
        return None
    below = ", ".join(f"{k} {v:.4f}" for k, v in sorted(quality.get("below_floor", {}).items()))
    return f"model quality: AUC below the floor {quality.get('min_auc')}: {below} (report: {report})"


class QualityGateOperator(BaseOperator):
    """Fail the run (no retries) when the evaluation at `evaluation` did not pass its quality verdict."""

    template_fields = ("evaluation", "report")
    ui_color = "#f4e4e4"

    def __init__(self, *, evaluation: str, report: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.evaluation = evaluation
        self.report = report

    def execute(self, context: Any) -> dict[str, Any]:
        from jobs.core.storage import METRICS_FILE, filesystem

        fs, path = filesystem(f"{self.evaluation.rstrip('/')}/{METRICS_FILE}")
        quality = json.loads(fs.cat_file(path)).get("quality") or {}
        for cls, drop in sorted((quality.get("flagged_drops") or {}).items()):
            self.log.warning("AUC %s dropped by %.4f against the previous successful run", cls, drop)
        line = gate_line(quality, self.report)
        if line:
            raise AirflowFailException(line)
        self.log.info("model quality passed (AUC floor %s)", quality.get("min_auc"))
        return quality


def quality_gate(run_dir: str, after: BaseOperator) -> QualityGateOperator:
    """Add the gate after `after` (the report task) to the DAG being defined."""
    gate = QualityGateOperator(
        task_id=TASK_ID, evaluation=f"{run_dir}/evaluation", report=f"{run_dir}/report/report.html", retries=0
    )
    after >> gate
    return gate
