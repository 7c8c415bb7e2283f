"""Assets that lead somewhere: each stage output that other DAGs may wait for is an Asset whose URI
names where that output lives for every run (`<output root>/<dag id>/*/<folder>`, the `*` standing
for the run), and each asset event says which run's output it was (`extra.url`) with the stage's key
figures from its own `_metrics.json` (events, events written, pairs, AUC, ...), so the Assets view
shows what a run produced without opening a log."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from airflow.sdk import Asset

from colliderflow.dagkit import data_root

log = logging.getLogger(__name__)


def location_uri(root: str) -> str:
    """A storage root as a URI: a local path as file://, a URL as it is."""
    return root if "://" in root else f"file://{os.path.abspath(root)}"


def output_asset(name: str, dag_id: str, folder: str) -> Asset:
    """The asset of a stage output `<output root>/<dag_id>/<run>/<folder>` under the default root."""
    return Asset(name=name, uri=f"{location_uri(data_root())}/runs/{dag_id}/*/{folder}")


def cumulative_asset(name: str, dag_id: str) -> Asset:
    """The asset of a DAG's cumulative result, `<output root>/<dag_id>/cumulative`."""
    return Asset(name=name, uri=f"{location_uri(data_root())}/runs/{dag_id}/cumulative")


def output_figures(url: str) -> dict[str, Any]:
    """The key figures of the stage output at `url` (its _metrics.json)."""
    from jobs.core.job_metrics import key_figures
    from jobs.core.storage import METRICS_FILE, filesystem

    fs, path = filesystem(f"{url.rstrip('/')}/{METRICS_FILE}")
    return key_figures(json.loads(fs.cat_file(path)))


class RecordOutput:
    """A task's post_execute hook: fill its outlets' asset events with the rendered output URL and the
    output's key figures. An output that cannot be read leaves the URL alone (logged), never fails
    the task that wrote it."""

    def __init__(self, output_template: str):
        self.output_template = output_template

    def __call__(self, context: dict, result: Any = None) -> None:
        task = context["task"]
        url = task.render_template(self.output_template, context)
        extra: dict[str, Any] = {"url": url, "run_id": context.get("run_id")}
        try:
            extra.update(output_figures(url))
        except Exception as exc:  # noqa: BLE001 - the figures are a courtesy; the output is committed
            log.warning("no key figures for the asset event of %s: %s", url, exc)
        keys = context["ti"].xcom_pull(task_ids="partition", key="partition_keys") or []
        if keys:
            extra["partitions"] = keys
        for outlet in task.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = extra
                if keys:
                    context["outlet_events"][outlet].add_partitions(keys)
