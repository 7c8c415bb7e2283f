"""The retry contract on Kubernetes, as on the local backend: a stage that exits with EXIT_BAD_INPUT (2)
said what is wrong with its input or arguments, and a retry would fail the same way, so the task fails
without retries (AirflowFailException). The exit code is read from the pod status the operators already
hold: the stage container's ``state.terminated.exitCode`` (Spark: the driver container, whose JVM exits
with the Python application's code)."""

from __future__ import annotations

from collections.abc import Iterable

from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

from jobs.core.cli import EXIT_BAD_INPUT


def terminated_state(pod: k8s.V1Pod | None, container: str) -> k8s.V1ContainerStateTerminated | None:
    """How `container` of `pod` ended (None while it runs, or when the status does not say)."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == container and status.state and status.state.terminated:
            return status.state.terminated
    return None


def fail_on_bad_input(pods: Iterable[k8s.V1Pod | None], container: str, task_id: str) -> None:
    """Raise AirflowFailException when `container` exited with EXIT_BAD_INPUT in any of `pods`."""
    for pod in pods:
        ended = terminated_state(pod, container)
        if ended is not None and ended.exit_code == EXIT_BAD_INPUT:
            detail = (ended.message or ended.reason or "").strip().splitlines()[-1:]
            raise AirflowFailException(
                f"{task_id}: pod {pod.metadata.name} exited with {EXIT_BAD_INPUT} (bad input, not retried)"
                + (f": {detail[0][:300]}" if detail else "")
            )


class BadInputFailsMixin:
    """For KubernetesPodOperator subclasses (pods, Spark drivers): after the provider's own cleanup
    (pod/SparkApplication deletion, its failure), an exit code 2 of the stage container fails the task
    without retries; other failures stay ordinary, retried ones."""

    def cleanup(self, pod, remote_pod, *args, **kwargs):
        try:
            return super().cleanup(pod, remote_pod, *args, **kwargs)
        finally:
            fail_on_bad_input([remote_pod], self.base_container_name, self.task_id)
