"""Where and with what the stages run, read once per DAG parse: the manifest builders take a
KubernetesConfig and never look at the environment or Airflow Variables themselves."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class KubernetesConfig:
    """Where and with what the stages run; defaults follow charts/colliderflow/values.yaml with the
    release named `colliderflow` installed in namespace `colliderflow`."""

    namespace: str = "colliderflow"
    spark_image: str = "colliderflow/spark:0.1.0"
    tensorflow_image: str = "colliderflow/tensorflow:0.1.0"
    tensorflow_gpu_image: str = "colliderflow/tensorflow:0.1.0-gpu"
    image_pull_policy: str = "IfNotPresent"
    spark_service_account: str = "colliderflow-spark"
    training_service_account: str = "colliderflow-training"
    storage_secret: str = "colliderflow-storage"
    storage_configmap: str = "colliderflow-storage"
    # Where the job modules live inside the images (images/*/Dockerfile: WORKDIR /opt/colliderflow/src).
    jobs_path: str = "local:///opt/colliderflow/src/jobs"
    kubernetes_conn_id: str = "kubernetes_default"
    tf_port: int = 2222
    startup_timeout_seconds: int = 600
    # Deferrable pod/Spark tasks ([operators] default_deferrable): how often the task resumes from the
    # triggerer to copy the pod's new log lines into the task log (None in the provider: only at the end).
    logging_interval_seconds: int = 60
    # A ReadWriteMany PersistentVolumeClaim mounted at `work_mount` in every stage pod (Spark driver
    # and executors included), for outputs that need a shared filesystem (jobs.train's checkpoints and
    # model, written by all workers). Empty: none.
    work_volume_claim: str = ""
    work_mount: str = "/work"

    @classmethod
    def load(cls) -> KubernetesConfig:
        """COLLIDERFLOW_K8S_<FIELD> wins, then the Airflow Variable `colliderflow_kubernetes` (JSON),
        then the defaults."""
        overrides: dict[str, Any] = {}
        try:
            from airflow.sdk import Variable

            overrides = Variable.get("colliderflow_kubernetes", default={}, deserialize_json=True) or {}
        except Exception:  # no metadata DB / API reachable at parse time
            overrides = {}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"Variable colliderflow_kubernetes: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        for name in known:
            env = os.environ.get(f"COLLIDERFLOW_K8S_{name.upper()}")
            if env:
                overrides[name] = env
        for name, value in list(overrides.items()):
            if known[name].type in ("int", int):
                try:
                    overrides[name] = int(value)
                except ValueError:
                    raise ValueError(
                        f"COLLIDERFLOW_K8S_{name.upper()}: {value!r} is not an integer"
                    ) from None
        return replace(cls(), **overrides)

    def run_root_problem(self, output_root: str) -> str | None:
        """Why the run's output root cannot work on the cluster, or None. A local path lives inside one
        pod; Spark executors and TF workers on other nodes would each write their own copy, so it is
        accepted only below the shared volume's mount."""
        if "://" in output_root and not output_root.startswith("file://"):
            return None
        path = output_root.removeprefix("file://")
        mount = self.work_mount.rstrip("/") + "/"
        if self.work_volume_claim and (path + "/").startswith(mount):
            return None
        where = (
            f"is not below the shared volume's mount {self.work_mount}"
            if self.work_volume_claim
            else "is a local path inside one pod and no shared volume is configured"
        )
        return (
            f"output_root={output_root!r} {where}: set output_root (or COLLIDERFLOW_STORAGE_ROOT, "
            "the chart's storage.root) to an s3:// or oci:// URL, or mount a ReadWriteMany claim with "
            "COLLIDERFLOW_K8S_WORK_VOLUME_CLAIM and write below COLLIDERFLOW_K8S_WORK_MOUNT"
        )

    def image(self, role: str) -> str:
        """An image role (spark, tensorflow, tensorflow-gpu) or a full image reference."""
        roles = {
            "spark": self.spark_image,
            "tensorflow": self.tensorflow_image,
            "tensorflow-gpu": self.tensorflow_gpu_image,
        }
        return roles.get(role, role)
