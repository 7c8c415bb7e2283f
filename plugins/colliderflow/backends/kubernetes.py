"""The Kubernetes backend: the same stages as the local backend, rendered for a cluster.

- kind "spark"          -> SparkKubernetesOperator submitting a SparkApplication (spark-operator v1beta2);
- kind "python"         -> KubernetesPodOperator running ``python -m jobs.<module>``;
- kind "tf-multiworker" -> TFMultiWorkerOperator: N worker pods behind one headless Service (stable DNS
  names, one TF_CONFIG each), created together by ONE task, waited for together, always cleaned up.

Selected with COLLIDERFLOW_BACKEND=kubernetes (DAG files never change). Images, namespace, service
accounts, the storage Secret and the Spark event-log directory come from COLLIDERFLOW_K8S_* variables,
then the Airflow Variable ``colliderflow_kubernetes`` (a JSON object), then defaults that match
charts/colliderflow/values.yaml. Storage credentials only ever come from that Secret (envFrom / a
secret volume), never as literal values in a manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from importlib.metadata import version
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from colliderflow.stages import Resources, Stage, command_args

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"
IN_CLUSTER_MASTER = "k8s://https://kubernetes.default.svc:443"
STORAGE_MOUNT = "/etc/colliderflow/storage"
GPU_RESOURCE = "nvidia.com/gpu"
PROMETHEUS_SERVLET = "org.apache.spark.metrics.sink.PrometheusServlet"
APP_LABEL = {"app.kubernetes.io/name": "colliderflow", "app.kubernetes.io/part-of": "colliderflow"}


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


def _cluster_args(args: Sequence[str]) -> list[str]:
    """A stage's arguments for a cluster: a local Spark master (--master local[*]) is replaced by the
    in-cluster master the driver already runs under."""
    out = [str(a) for a in args]
    for i, arg in enumerate(out[:-1]):
        if arg == "--master":
            out[i + 1] = IN_CLUSTER_MASTER
    return out


def _operator_kwargs(stage: Stage) -> dict[str, Any]:
    return {"outlets": list(stage.outlets), **({"pool": stage.pool} if stage.pool else {})}


# --------------------------------------------------------------------------------------------- Spark
def spark_application(stage: Stage, cfg: KubernetesConfig) -> dict[str, Any]:
    """The SparkApplication (v1beta2) of a Spark stage; its strings may hold Jinja (rendered by Airflow)."""
    res = stage.resources
    env = [
        {"name": "COLLIDERFLOW_BACKEND", "value": "kubernetes"},
        # jobs.common.spark.spark_session: keep the cluster's master, serve the UI (Prometheus servlet).
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
            "mainApplicationFile": f"{cfg.jobs_path}/{module_path}.py",
            "arguments": _cluster_args(stage.args),
            "sparkVersion": version("pyspark"),
            # Airflow owns retries (with backoff, visible in the UI); a second retry layer inside the
            # operator would multiply attempts and hide failures.
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": 86400,
            **({"volumes": volumes} if volumes else {}),
            "sparkConf": {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": cfg.event_log_dir,
                "spark.ui.prometheus.enabled": "true",
                "spark.metrics.namespace": "colliderflow",
                "spark.metrics.conf.*.sink.prometheusServlet.class": PROMETHEUS_SERVLET,
                "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
                "spark.executor.processTreeMetrics.enabled": "true",
                "spark.kubernetes.executor.deleteOnTermination": "true",
                **(
                    {
                        "spark.hadoop.fs.s3a.endpoint": cfg.s3_endpoint,
                        "spark.hadoop.fs.s3a.path.style.access": "true",
                    }
                    if cfg.s3_endpoint
                    else {}
                ),
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


class ColliderflowSparkOperator(SparkKubernetesOperator):
    """SparkKubernetesOperator whose spec numbers may be Jinja (e.g. "{{ params.executors }}"): after
    rendering, integer fields the CRD types as integers are turned back into ints."""

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
        get_logs=True,
        delete_on_termination=True,
        **_operator_kwargs(stage),
        **kwargs,
    )


# -------------------------------------------------------------------------------------------- Python
def _pod_env(extra: dict[str, str] | None = None) -> list[k8s.V1EnvVar]:
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
        "env_vars": _pod_env(),
        "env_from": storage_env_from(cfg),
        "volumes": volumes,
        "volume_mounts": mounts,
        "tolerations": gpu_tolerations(stage.resources),
        "service_account_name": cfg.training_service_account,
        "labels": stage_labels(stage),
        "kubernetes_conn_id": cfg.kubernetes_conn_id,
        "startup_timeout_seconds": cfg.startup_timeout_seconds,
    }


class ColliderflowPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator whose rendered arguments drop the stages' OMIT marker (off flags)."""

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.arguments = command_args(self.arguments or [])


def python_task(stage: Stage, cfg: KubernetesConfig, **kwargs: Any) -> KubernetesPodOperator:
    return ColliderflowPodOperator(
        task_id=stage.task_id,
        name=dns_name(stage.task_id),
        arguments=[str(a) for a in stage.args],
        get_logs=True,
        on_finish_action="delete_pod",
        durable=True,  # a restarted worker reattaches to the running pod
        **pod_operator_kwargs(stage, cfg),
        **_operator_kwargs(stage),
        **kwargs,
    )


# ------------------------------------------------------------------------------------ TF multi-worker
def tf_config(hosts: Sequence[str], index: int) -> str:
    """MultiWorkerMirroredStrategy's TF_CONFIG for worker `index` of `hosts`."""
    return json.dumps({"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}})


class TFMultiWorkerOperator(BaseOperator):
    """Run ``python -m jobs.<module>`` on N worker pods at once, like CERN's tf-spawner: one headless
    Service gives every pod a stable DNS name (<job>-worker-<i>.<job>.<ns>.svc), each pod gets its own
    TF_CONFIG. All pods are created before any is waited for (a collective only starts when every worker
    is up: one mapped task per worker could start half of them and hang); the task fails as soon as one
    worker fails, and pods and Service are deleted on success, failure and kill alike. The pods are
    owned by the Service, so deleting it garbage-collects them even if this process dies."""

    template_fields: Sequence[str] = ("arguments", "num_workers", "num_gpus")
    ui_color = "#ffe4b5"

    def __init__(
        self,
        *,
        stage: Stage,
        config: KubernetesConfig,
        arguments: Sequence[str] = (),
        num_workers: int | str | None = None,
        num_gpus: int | str | None = None,
        poll_interval: float = 10.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.stage = stage
        self.config = config
        self.arguments = [str(a) for a in arguments]
        # An int, or Jinja (e.g. "{{ params.workers }}") rendered before execute.
        self.num_workers = stage.resources.workers if num_workers is None else num_workers
        # GPUs per worker, likewise (the GPU image, limits and tolerations follow the rendered value).
        self.num_gpus = stage.resources.gpu if num_gpus is None else num_gpus
        self.poll_interval = poll_interval
        self._created: tuple[str, list[str]] | None = None
        if isinstance(self.num_workers, int):
            _ = self.workers  # validate now when it is known at parse time

    def _count(self, value: int | str, what: str, minimum: int) -> int:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.task_id}: {what} {value!r} is not an integer") from None
        if n < minimum:
            raise ValueError(f"{self.task_id}: {what} must be >= {minimum}, got {n}")
        return n

    @property
    def workers(self) -> int:
        return self._count(self.num_workers, "worker count", 1)

    @property
    def gpus(self) -> int:
        return self._count(self.num_gpus, "GPUs per worker", 0)

    def job_name(self, context: Any | None = None) -> str:
        """Unique per DAG run and try (a retry never meets the previous try's pods), DNS-safe."""
        key = "manual"
        if context:
            ti = context["ti"]
            key = f"{ti.dag_id}/{context['run_id']}/{ti.task_id}/{ti.try_number}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"{dns_name(self.task_id, 40)}-{digest}"

    def worker_hosts(self, job: str) -> list[str]:
        ns, port = self.config.namespace, self.config.tf_port
        return [f"{job}-worker-{i}.{job}.{ns}.svc:{port}" for i in range(self.workers)]

    def service_manifest(self, job: str) -> dict[str, Any]:
        port = self.config.tf_port
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": job,
                "namespace": self.config.namespace,
                "labels": {**stage_labels(self.stage), "colliderflow/tf-job": job},
            },
            "spec": {
                "clusterIP": "None",
                "selector": {"colliderflow/tf-job": job},
                # DNS records before readiness: workers look each other up while starting.
                "publishNotReadyAddresses": True,
                "ports": [{"name": "tf", "port": port, "targetPort": port, "protocol": "TCP"}],
            },
        }

    def worker_pod(self, job: str, index: int, context: Any | None = None) -> k8s.V1Pod:
        """Worker `index`, built by the real KubernetesPodOperator pod builder."""
        hosts = self.worker_hosts(job)
        resources = replace(self.stage.resources, workers=self.workers, gpu=self.gpus)
        kwargs = pod_operator_kwargs(replace(self.stage, resources=resources), self.config)
        kwargs["labels"] = {
            **kwargs["labels"],
            "colliderflow/tf-job": job,
            "colliderflow/worker-index": str(index),
        }
        kwargs["env_vars"] = _pod_env(
            {
                "TF_CONFIG": tf_config(hosts, index),
                "COLLIDERFLOW_WORKER_HOSTS": ",".join(hosts),
                "COLLIDERFLOW_WORKER_INDEX": str(index),
            }
        )
        builder = KubernetesPodOperator(
            task_id=f"{self.task_id}-worker-{index}",
            name=f"{job}-worker-{index}",
            random_name_suffix=False,
            hostname=f"{job}-worker-{index}",
            subdomain=job,
            arguments=command_args(self.arguments),
            ports=[k8s.V1ContainerPort(name="tf", container_port=self.config.tf_port)],
            **kwargs,
        )
        return builder.build_pod_request_obj(context, dry_run=True)

    def manifests(self, context: Any | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(headless Service, worker pods) as plain dicts, exactly what execute() creates."""
        from kubernetes.client import ApiClient

        job = self.job_name(context)
        api = ApiClient()
        pods = [api.sanitize_for_serialization(self.worker_pod(job, i, context)) for i in range(self.workers)]
        return self.service_manifest(job), pods

    # ---- execution (needs a cluster)
    def execute(self, context: Any) -> None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        core = KubernetesHook(conn_id=self.config.kubernetes_conn_id).core_v1_client
        service, pods = self.manifests(context)
        self.run_workers(core, service, pods)

    def run_workers(self, core, service: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """Create the Service and every pod, wait for all, clean up whatever happens."""
        ns, job = self.config.namespace, service["metadata"]["name"]
        self._created = (job, [p["metadata"]["name"] for p in pods])
        try:
            svc = core.create_namespaced_service(ns, service)
            owner = {
                "apiVersion": "v1",
                "kind": "Service",
                "name": job,
                "uid": svc.metadata.uid,
                "blockOwnerDeletion": False,
            }
            for pod in pods:
                pod = copy.deepcopy(pod)
                pod["metadata"]["ownerReferences"] = [owner]
                core.create_namespaced_pod(ns, pod)
            self.log.info("created %d workers of %s: %s", len(pods), job, ", ".join(self._created[1]))
            self._wait(core, job, len(pods))
        finally:
            self.cleanup(core)

    def _wait(self, core, job: str, n: int) -> None:
        start = time.monotonic()
        while True:
            items = core.list_namespaced_pod(
                self.config.namespace, label_selector=f"colliderflow/tf-job={job}"
            ).items
            phases = {p.metadata.name: p.status.phase if p.status else "Pending" for p in items}
            failed = sorted(name for name, ph in phases.items() if ph == "Failed")
            if failed or len(phases) < n:
                self._log_tails(core, failed or sorted(phases))
                why = (
                    f"worker(s) {', '.join(failed)} failed"
                    if failed
                    else f"only {len(phases)}/{n} pods exist"
                )
                raise AirflowException(f"{self.task_id}: {why}")
            if all(ph == "Succeeded" for ph in phases.values()):
                self._log_tails(core, sorted(phases)[:1])
                return
            if any(ph == "Pending" for ph in phases.values()) and (
                time.monotonic() - start > self.config.startup_timeout_seconds
            ):
                raise AirflowException(
                    f"{self.task_id}: workers still pending after "
                    f"{self.config.startup_timeout_seconds}s: {phases}"
                )
            time.sleep(self.poll_interval)

    def _log_tails(self, core, names: Sequence[str], lines: int = 200) -> None:
        for name in names:
            try:
                text = core.read_namespaced_pod_log(name, self.config.namespace, tail_lines=lines)
            except Exception as exc:  # the log is a courtesy; the phase decides the outcome
                text = f"(no log: {exc})"
            self.log.info("---- %s (last %d lines)\n%s", name, lines, text)

    def cleanup(self, core) -> None:
        if not self._created:
            return
        job, names = self._created
        for name in names:
            self._delete(core.delete_namespaced_pod, name)
        self._delete(core.delete_namespaced_service, job)
        self._created = None

    def _delete(self, fn, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            fn(name, self.config.namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                self.log.warning("could not delete %s: %s", name, exc)

    def on_kill(self) -> None:
        if self._created:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            self.cleanup(KubernetesHook(conn_id=self.config.kubernetes_conn_id).core_v1_client)


def tf_multiworker_task(stage: Stage, cfg: KubernetesConfig, **kwargs: Any) -> TFMultiWorkerOperator:
    """A stage's `--workers N` (the local launcher's option, possibly Jinja) becomes the number of pods;
    inside a pod the job is one worker of the cluster that TF_CONFIG describes."""
    args = [str(a) for a in stage.args]
    workers: int | str = stage.resources.workers
    if "--workers" in args[:-1]:
        i = args.index("--workers")
        workers = args[i + 1]
        del args[i : i + 2]
    return TFMultiWorkerOperator(
        task_id=stage.task_id,
        stage=stage,
        config=cfg,
        arguments=args,
        num_workers=workers,
        **_operator_kwargs(stage),
        **kwargs,
    )


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
