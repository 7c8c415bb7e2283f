"""The colliderflow Airflow plugin: each run's results inside the Airflow UI. A "Run report" tab on the
DAG-run page, a "Stage output" tab on the task-instance page, "Nightly trends" on the DAG page (external
views of the FastAPI app in colliderflow.results_app, served by the API server under /colliderflow and
protected by Airflow's own login and DAG permissions), and extra links from every task to the same
pages. The package colliderflow itself is not a plugin folder (plugins/.airflowignore)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from colliderflow.results_app import create_app

PREFIX = "colliderflow"


class RunReportLink(BaseOperatorLink):
    """Extra link: the run's report."""

    name = "Run report"

    def get_link(self, operator, *, ti_key) -> str:
        return f"/{PREFIX}/runs/{ti_key.dag_id}/{ti_key.run_id}/report"


class StageOutputLink(BaseOperatorLink):
    """Extra link: the task's output (key figures, plots, files)."""

    name = "Stage output"

    def get_link(self, operator, *, ti_key) -> str:
        return f"/{PREFIX}/runs/{ti_key.dag_id}/{ti_key.run_id}/tasks/{ti_key.task_id}"


class ColliderflowPlugin(AirflowPlugin):
    name = "colliderflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": f"/{PREFIX}", "name": "colliderflow results"}]
    external_views = [
        {"name": "Run report", "href": f"{PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}/report",
         "destination": "dag_run", "url_route": "colliderflow_report"},
        {"name": "Stage output", "href": f"{PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}/tasks/{{TASK_ID}}",
         "destination": "task_instance", "url_route": "colliderflow_stage"},
        {"name": "Nightly trends", "href": f"{PREFIX}/trends/{{DAG_ID}}",
         "destination": "dag", "url_route": "colliderflow_trends"},
    ]  # fmt: skip
    global_operator_extra_links = [RunReportLink(), StageOutputLink()]
