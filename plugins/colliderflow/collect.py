"""The last tasks of every DAG: `stage_times` (how long each finished task of this DAG run took,
read through the Task SDK, so it works on every executor without metadata-DB access) feeding
`collect_metrics` (``python -m jobs.metrics``, a normal stage on the configured backend, which gets the
times as inline JSON and never imports Airflow).

    last = collect_metrics(RUN, after=[dimuon])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from colliderflow.backends import stage_task
from colliderflow.dagkit import TRY_NUMBER_KEY
from colliderflow.stages import Resources, Stage

TIMES_TASK = "stage_times"
# Jinja: the Pushgateway URL from $COLLIDERFLOW_PUSHGATEWAY (read by the job itself) or this Variable.
PUSHGATEWAY = "{{ var.value.get('colliderflow_pushgateway', '') }}"


class StageTimesOperator(BaseOperator):
    """Return {dag_id, run_id, tasks: [{task_id, state, operator, duration_seconds, try_number}]} for the
    task instances of this DAG run that have finished, in pipeline order (the XCom the metrics job is
    templated with). The try numbers are those the tasks recorded (dagkit.record_try_number)."""

    ui_color = "#eeeeee"

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        crumbs = ti.get_task_breadcrumbs(dag_id=ti.dag_id, run_id=ti.run_id)
        order = {t.task_id: i for i, t in enumerate(self.dag.topological_sort())}  # pipeline order
        tasks = []
        for crumb in sorted(
            crumbs, key=lambda c: (order.get(c["task_id"], len(order)), c.get("map_index", -1))
        ):
            if crumb["task_id"] == self.task_id:
                continue
            map_index = crumb.get("map_index", -1)
            duration = crumb.get("duration")
            tasks.append(
                {
                    "task_id": crumb["task_id"]
                    + (f"[{map_index}]" if map_index is not None and map_index >= 0 else ""),
                    "state": str(getattr(crumb.get("state"), "value", crumb.get("state"))),
                    "operator": crumb.get("operator"),
                    "duration_seconds": float(duration) if duration is not None else None,
                    "try_number": ti.xcom_pull(
                        task_ids=crumb["task_id"], key=TRY_NUMBER_KEY, map_indexes=map_index
                    ),
                }
            )
        self.log.info(
            "stage times of %s: %s", ti.run_id, {t["task_id"]: t["duration_seconds"] for t in tasks}
        )
        return {"dag_id": ti.dag_id, "run_id": ti.run_id, "tasks": tasks}


def collect_metrics(
    run_dir: str,
    *,
    after: Sequence[BaseOperator] = (),
    task_id: str = "collect_metrics",
    resources: Resources | None = None,
) -> BaseOperator:
    """Add stage_times >> collect_metrics (after `after`) to the DAG being defined; returns the last task.
    `run_dir` is the run's (templated) output directory; the report lands in <run_dir>/report."""
    times = StageTimesOperator(task_id=TIMES_TASK, retries=1)
    report = stage_task(Stage(
        task_id=task_id,
        module="metrics",
        args=[
            "--run-dir", run_dir,
            "--output", f"{run_dir}/report",
            "--dag-id", "{{ dag.dag_id }}",
            "--run-id", "{{ run_id }}",
            "--stage-times", f"{{{{ ti.xcom_pull(task_ids='{TIMES_TASK}') | tojson }}}}",
            "--pushgateway", PUSHGATEWAY,
        ],
        kind="python",
        resources=resources or Resources(cpu=1, memory="2Gi"),
    ))  # fmt: skip
    for upstream in after:
        upstream >> times
    times >> report
    return report
