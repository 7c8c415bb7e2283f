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
    # Default Spark event-log location (a Hadoop URL); a stage's --event-log-dir overrides it per run.
    # Unset: <$COLLIDERFLOW_STORAGE_ROOT>/spark-events (the chart's storage ConfigMap sets the root).
    event_log_dir: str = "s3a://colliderflow/spark-events"
    # S3-compatible endpoint for Spark's own s3a:// I/O (event logs); default $COLLIDERFLOW_S3_ENDPOINT.
    s3_endpoint: str = ""
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
        then what the chart's storage ConfigMap says (storage root, S3 endpoint), then the defaults."""
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
        root = os.environ.get("COLLIDERFLOW_STORAGE_ROOT", "").rstrip("/")
        if root.startswith(("s3://", "s3a://", "oci://")):
            hadoop_root = "s3a://" + root.split("://", 1)[1] if root.startswith("s3") else root
            overrides.setdefault("event_log_dir", f"{hadoop_root}/spark-events")
        if os.environ.get("COLLIDERFLOW_S3_ENDPOINT"):
            overrides.setdefault("s3_endpoint", os.environ["COLLIDERFLOW_S3_ENDPOINT"])
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

    def image(self, role: str) -> str:
        """An image role (spark, tensorflow, tensorflow-gpu) or a full image reference."""
        roles = {
            "spark": self.spark_image,
            "tensorflow": self.tensorflow_image,
            "tensorflow-gpu": self.tensorflow_gpu_image,
        }
        return roles.get(role, role)
