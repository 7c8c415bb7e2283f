"""The Kubernetes backend: the same stages as the local backend, rendered for a cluster, one module
per operator kind (as in the cncf-kubernetes provider) so each can be read on its own:

- kind "spark"          -> spark_application: SparkKubernetesOperator submitting a SparkApplication;
- kind "python"         -> pod: KubernetesPodOperator running ``python -m jobs.<module>``;
- kind "tf-multiworker" -> training_job: TrainingJobOperator (the provider's KubernetesJobOperator),
  one Indexed Job of N worker pods behind one headless Service, deferrable, always cleaned up.

A stage that exits 2 (bad input) fails its task without retries on every kind (exit_codes).

Selected with COLLIDERFLOW_BACKEND=kubernetes (DAG files never change); settings come from config
(COLLIDERFLOW_K8S_*, the Airflow Variable ``colliderflow_kubernetes``, the chart's defaults). Storage
credentials only ever come from the storage Secret (envFrom / a secret volume), never as literal
values in a manifest.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.manifest import dns_name, k8s_memory, spark_memory
from colliderflow.backends.kubernetes.pod import ColliderflowPodOperator, pod_operator_kwargs, python_task
from colliderflow.backends.kubernetes.spark_application import (
    IN_CLUSTER_MASTER,
    SPARK_API_VERSION,
    ColliderflowSparkOperator,
    spark_application,
    spark_task,
)
from colliderflow.backends.kubernetes.training_job import TrainingJobOperator, tf_multiworker_task
from colliderflow.stages import Stage

__all__ = [
    "IN_CLUSTER_MASTER",
    "SPARK_API_VERSION",
    "ColliderflowPodOperator",
    "ColliderflowSparkOperator",
    "KubernetesConfig",
    "dns_name",
    "k8s_memory",
    "kubernetes_task",
    "pod_operator_kwargs",
    "python_task",
    "spark_application",
    "spark_memory",
    "spark_task",
    "TrainingJobOperator",
    "tf_multiworker_task",
]


def kubernetes_task(stage: Stage, config: KubernetesConfig | None = None, **kwargs: Any) -> BaseOperator:
    """The Airflow operator running `stage` on Kubernetes."""
    cfg = config or KubernetesConfig.load()
    if stage.kind == "spark":
        return spark_task(stage, cfg, **kwargs)
    if stage.kind == "python":
        return python_task(stage, cfg, **kwargs)
    if stage.kind == "tf-multiworker":
        return tf_multiworker_task(stage, cfg, **kwargs)
    raise ValueError(f"{stage.task_id}: unknown stage kind {stage.kind!r}")
