"""Spark stages: a SparkApplication (spark-operator v1beta2) submitted by the provider's
SparkKubernetesOperator, with Jinja-rendered numbers turned back into the integers the CRD requires."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.exit_codes import BadInputFailsMixin
from colliderflow.backends.kubernetes.manifest import (
    STORAGE_MOUNT,
    dns_name,
    image_role,
    spark_memory,
    stage_labels,
    task_kwargs,
)
from colliderflow.stages import Stage, command_args

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"
IN_CLUSTER_MASTER = "k8s://https://kubernetes.default.svc:443"
PROMETHEUS_SERVLET = "org.apache.spark.metrics.sink.PrometheusServlet"


def _cluster_args(args: Sequence[str]) -> list[str]:
    """A stage's arguments for a cluster: a local Spark master (--master local[*]) is replaced by the
    in-cluster master the driver already runs under."""
    out = [str(a) for a in args]
    for i, arg in enumerate(out[:-1]):
        if arg == "--master":
            out[i + 1] = IN_CLUSTER_MASTER
    return out


def spark_application(stage: Stage, cfg: KubernetesConfig) -> dict[str, Any]:
    """The SparkApplication (v1beta2) of a Spark stage; its strings may hold Jinja (rendered by Airflow)."""
    res = stage.resources
    env = [
        {"name": "COLLIDERFLOW_BACKEND", "value": "kubernetes"},
        # jobs.core.spark.spark_session: keep the cluster's master, serve the UI (Prometheus servlet).
        {"name": "COLLIDERFLOW_SPARK_MASTER", "value": IN_CLUSTER_MASTER},
        {"name": "COLLIDERFLOW_SPARK_UI", "value": "true"},
    ]
    env_from = [
        {"secretRef": {"name": cfg.storage_secret, "optional": True}},
        {"configMapRef": {"name": cfg.storage_configmap, "optional": True}},
    ]
    secrets = [{"name": cfg.storage_secret, "path": STORAGE_MOUNT, "secretType": "Generic"}]
    labels = stage_labels(stage)
    common: dict[str, Any] = {"labels": labels, "env": env, "envFrom": env_from, "secrets": secrets}
    volumes = []
    if cfg.work_volume_claim:
        volumes = [{"name": "work", "persistentVolumeClaim": {"claimName": cfg.work_volume_claim}}]
        common["volumeMounts"] = [{"name": "work", "mountPath": cfg.work_mount}]
    module_path = stage.module.replace(".", "/")
    return {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": {"name": dns_name(stage.task_id), "namespace": cfg.namespace, "labels": labels},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": cfg.image(image_role(stage)),
            "imagePullPolicy": cfg.image_pull_policy,
            "mainApplicationFile": f"{cfg.jobs_path}/{module_path}/__main__.py",
            "arguments": _cluster_args(stage.args),
            "sparkVersion": version("pyspark"),
            # Airflow owns retries (with backoff, visible in the UI); a second retry layer inside the
            # operator would multiply attempts and hide failures.
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": 86400,
            **({"volumes": volumes} if volumes else {}),
            "sparkConf": {
                "spark.ui.prometheus.enabled": "true",
                "spark.metrics.namespace": "colliderflow",
                "spark.metrics.conf.*.sink.prometheusServlet.class": PROMETHEUS_SERVLET,
                "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
                "spark.executor.processTreeMetrics.enabled": "true",
                "spark.kubernetes.executor.deleteOnTermination": "true",
            },
            "driver": {
                **copy.deepcopy(common),
                "cores": max(1, math.ceil(res.cpu)),
                "coreRequest": str(res.cpu),
                "memory": spark_memory(res.memory),
                "serviceAccount": cfg.spark_service_account,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "4040",
                    "prometheus.io/path": "/metrics/prometheus",
                },
            },
            "executor": {
                **copy.deepcopy(common),
                "instances": res.executors,
                "cores": res.executor_cores,
                "memory": spark_memory(res.executor_memory),
                "serviceAccount": cfg.spark_service_account,
            },
        },
    }


class ColliderflowSparkOperator(BadInputFailsMixin, SparkKubernetesOperator):
    """SparkKubernetesOperator whose spec numbers may be Jinja (e.g. "{{ params.executors }}"): after
    rendering, integer fields the CRD types as integers are turned back into ints. A driver exiting 2
    (the stage's bad-input code, passed on by spark-submit) fails the task without retries."""

    INT_FIELDS = ("instances", "cores")

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        spec = self.template_spec.get("spark", self.template_spec).get("spec", {})
        spec["arguments"] = command_args(spec.get("arguments", []))
        for role in ("driver", "executor"):
            for key in self.INT_FIELDS:
                value = spec.get(role, {}).get(key)
                if isinstance(value, str) and value.strip().isdigit():
                    spec[role][key] = int(value)

    def application_body(self) -> dict[str, Any]:
        """The body the operator's CustomObjectLauncher would submit (no cluster needed)."""
        from airflow.providers.cncf.kubernetes.operators.custom_object_launcher import CustomObjectLauncher

        launcher = CustomObjectLauncher(
            name=self.name or dns_name(self.task_id),
            namespace=self.namespace,
            kube_client=None,
            custom_obj_api=None,
            template_body=copy.deepcopy(self.template_body),
        )
        return launcher.body


def spark_task(stage: Stage, cfg: KubernetesConfig, **kwargs: Any) -> ColliderflowSparkOperator:
    return ColliderflowSparkOperator(
        task_id=stage.task_id,
        name=dns_name(stage.task_id),
        namespace=cfg.namespace,
        template_spec={"spark": spark_application(stage, cfg)},
        kubernetes_conn_id=cfg.kubernetes_conn_id,
        startup_timeout_seconds=cfg.startup_timeout_seconds,
        get_logs=True,  # the driver's output in the task log (streamed; docs/kubernetes.md, "Logs")
        logging_interval=cfg.logging_interval_seconds,
        delete_on_termination=True,
        **task_kwargs(stage),
        **kwargs,
    )
