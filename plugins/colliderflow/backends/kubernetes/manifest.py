"""Manifest pieces every stage kind shares (names, labels, images, resources, storage references), so
a Spark driver, a pod and a training worker get the same rules from one place."""

from __future__ import annotations

import re
from typing import Any

from kubernetes.client import models as k8s

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.stages import Resources, Stage

STORAGE_MOUNT = "/etc/colliderflow/storage"
GPU_RESOURCE = "nvidia.com/gpu"
APP_LABEL = {"app.kubernetes.io/name": "colliderflow", "app.kubernetes.io/part-of": "colliderflow"}


def dns_name(text: str, max_len: int = 63) -> str:
    """A DNS-1035 label (what Services and pod hostnames need) from a task id."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"cf-{name}"
    return name[:max_len].rstrip("-")


def spark_memory(quantity: str) -> str:
    """Kubernetes quantity (4Gi, 512Mi) -> JVM size (4g, 512m); JVM sizes and Jinja pass through."""
    if "{{" in str(quantity):
        return str(quantity)
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMGT])i?\s*", str(quantity), flags=re.IGNORECASE)
    if m:
        return f"{m.group(1)}{m.group(2).lower()}"
    if re.fullmatch(r"[0-9]+[kmgt]?", str(quantity)):
        return str(quantity)
    raise ValueError(f"memory {quantity!r}: expected a size like 4Gi, 512Mi or 2g")


def k8s_memory(quantity: str) -> str:
    """JVM size (2g) -> Kubernetes quantity (2Gi); Kubernetes quantities pass through."""
    m = re.fullmatch(r"([0-9]+)([kmgt])", str(quantity))
    return f"{m.group(1)}{m.group(2).upper()}i" if m else str(quantity)


def image_role(stage: Stage) -> str:
    """Spark stages run in the Spark image; Python and training stages in the TensorFlow image (it holds
    every job module; the GPU variant when a GPU is requested), unless the stage names one."""
    if stage.image:
        return stage.image
    if stage.kind == "spark":
        return "spark"
    return "tensorflow-gpu" if stage.resources.gpu > 0 else "tensorflow"


def storage_env_from(cfg: KubernetesConfig) -> list[k8s.V1EnvFromSource]:
    """Credentials (Secret) and non-secret storage settings (ConfigMap) as environment, by reference."""
    return [
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=cfg.storage_secret, optional=True)),
        k8s.V1EnvFromSource(
            config_map_ref=k8s.V1ConfigMapEnvSource(name=cfg.storage_configmap, optional=True)
        ),
    ]


def storage_volume(cfg: KubernetesConfig) -> tuple[k8s.V1Volume, k8s.V1VolumeMount]:
    """The same Secret as files (OCI config + key) under STORAGE_MOUNT."""
    volume = k8s.V1Volume(
        name="storage-credentials",
        secret=k8s.V1SecretVolumeSource(secret_name=cfg.storage_secret, optional=True, default_mode=0o440),
    )
    return volume, k8s.V1VolumeMount(name="storage-credentials", mount_path=STORAGE_MOUNT, read_only=True)


def container_resources(res: Resources) -> k8s.V1ResourceRequirements:
    """Requests = what the scheduler reserves; memory and GPUs are also limits (GPU requests must equal
    limits; an unbounded memory limit lets one stage starve a node)."""
    requests: dict[str, str] = {"cpu": str(res.cpu), "memory": res.memory}
    limits: dict[str, str] = {"memory": res.memory}
    if res.gpu > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(res.gpu)
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def gpu_tolerations(res: Resources) -> list[k8s.V1Toleration] | None:
    if res.gpu <= 0:
        return None
    return [k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]


def stage_labels(stage: Stage) -> dict[str, str]:
    return {**APP_LABEL, "colliderflow/stage": dns_name(stage.task_id), "colliderflow/kind": stage.kind}


def task_kwargs(stage: Stage) -> dict[str, Any]:
    """The Airflow-side operator arguments every kind takes from its stage (asset outlets, pool)."""
    return {"outlets": list(stage.outlets), **({"pool": stage.pool} if stage.pool else {})}
