"""Backends: the one place that turns a Stage into an Airflow task. Chosen by configuration
($COLLIDERFLOW_BACKEND, or the Airflow Variable colliderflow_backend), never by DAG files."""

from __future__ import annotations

import os
from typing import Any

from colliderflow.stages import Stage

BACKENDS = ("local", "kubernetes")


def configured_backend() -> str:
    """The environment wins (it is what a deployment sets); then the Airflow Variable; then local."""
    name = os.environ.get("COLLIDERFLOW_BACKEND")
    if not name:
        try:
            from airflow.sdk import Variable

            name = Variable.get("colliderflow_backend", default="local")
        except Exception:  # no metadata DB / API reachable at parse time
            name = "local"
    if name not in BACKENDS:
        raise ValueError(f"COLLIDERFLOW_BACKEND={name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def stage_task(stage: Stage, backend: str | None = None, **operator_kwargs: Any):
    """An Airflow operator running `stage` on `backend` (default: the configured one). A stage with
    outlets records its output's URL and key figures in their asset events (colliderflow.assets)."""
    backend = backend or configured_backend()
    if stage.outlets and "--output" in stage.args:
        from colliderflow.assets import RecordOutput

        output = stage.args[list(stage.args).index("--output") + 1]
        operator_kwargs.setdefault("post_execute", RecordOutput(output))
    if backend == "local":
        from colliderflow.backends.local import local_task

        return local_task(stage, **operator_kwargs)
    from colliderflow.backends.kubernetes import kubernetes_task

    return kubernetes_task(stage, **operator_kwargs)
