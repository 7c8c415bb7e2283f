"""Python stages: one pod running ``python -m jobs.<module>`` through the provider's
KubernetesPodOperator; its arguments also describe the multi-worker training Job's pods."""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.exit_codes import BadInputFailsMixin
from colliderflow.backends.kubernetes.manifest import (
    container_resources,
    dns_name,
    gpu_tolerations,
    image_role,
    stage_labels,
    storage_env_from,
    storage_volume,
    task_kwargs,
)
from colliderflow.stages import Stage, command_args


def pod_env(extra: dict[str, str] | None = None) -> list[k8s.V1EnvVar]:
    env = {
        "COLLIDERFLOW_BACKEND": "kubernetes",
        **(extra or {}),
    }
    return [k8s.V1EnvVar(name=k, value=str(v)) for k, v in env.items()]


def pod_operator_kwargs(stage: Stage, cfg: KubernetesConfig) -> dict[str, Any]:
    """KubernetesPodOperator arguments of a Python stage (shared with the training workers)."""
    volume, mount = storage_volume(cfg)
    volumes, mounts = [volume], [mount]
    if cfg.work_volume_claim:
        volumes.append(
            k8s.V1Volume(
                name="work",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=cfg.work_volume_claim
                ),
            )
        )
        mounts.append(k8s.V1VolumeMount(name="work", mount_path=cfg.work_mount))
    return {
        "namespace": cfg.namespace,
        "image": cfg.image(image_role(stage)),
        "image_pull_policy": cfg.image_pull_policy,
        "cmds": ["python", "-m", f"jobs.{stage.module}"],
        "container_resources": container_resources(stage.resources),
        "env_vars": pod_env(),
        "env_from": storage_env_from(cfg),
        "volumes": volumes,
        "volume_mounts": mounts,
        "tolerations": gpu_tolerations(stage.resources),
        "service_account_name": cfg.training_service_account,
        "labels": stage_labels(stage),
        "kubernetes_conn_id": cfg.kubernetes_conn_id,
        "startup_timeout_seconds": cfg.startup_timeout_seconds,
        # A failed stage's last log lines become its termination message (shown in the task's error).
        "termination_message_policy": "FallbackToLogsOnError",
    }


class ColliderflowPodOperator(BadInputFailsMixin, KubernetesPodOperator):
    """KubernetesPodOperator whose rendered arguments drop the stages' OMIT marker (off flags), and
    whose stage exiting 2 (bad input) fails the task without retries."""

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.arguments = command_args(self.arguments or [])


def python_task(stage: Stage, cfg: KubernetesConfig, **kwargs: Any) -> KubernetesPodOperator:
    return ColliderflowPodOperator(
        task_id=stage.task_id,
        name=dns_name(stage.task_id),
        arguments=[str(a) for a in stage.args],
        get_logs=True,  # the stage's output in the task log (streamed; see docs/kubernetes.md, "Logs")
        logging_interval=cfg.logging_interval_seconds,
        on_finish_action="delete_pod",
        durable=True,  # a restarted worker reattaches to the running pod
        **pod_operator_kwargs(stage, cfg),
        **task_kwargs(stage),
        **kwargs,
    )
