"""Multi-worker TensorFlow training as ONE Indexed Kubernetes Job, run by the provider's
KubernetesJobOperator: completions = parallelism = workers (every worker up at once, as a collective
needs), a headless Service giving each pod a stable DNS name, ``backoffLimit: 0`` so that a lost worker
fails the whole Job at once (Airflow owns retries), deferrable so no Airflow worker slot is held while it
trains. Each pod learns the cluster from COLLIDERFLOW_WORKER_HOSTS and its place from the
JOB_COMPLETION_INDEX that Kubernetes sets (jobs/train/cluster.py builds TF_CONFIG from the two). The
Job and its Service are deleted when the task ends, on success and on failure alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from kubernetes.client import models as k8s

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.exit_codes import fail_on_bad_input
from colliderflow.backends.kubernetes.manifest import (
    container_resources,
    dns_name,
    gpu_tolerations,
    image_role,
    stage_labels,
    task_kwargs,
)
from colliderflow.backends.kubernetes.pod import pod_operator_kwargs
from colliderflow.stages import Stage, command_args

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on every pod of a Job
HOSTS_VAR = "COLLIDERFLOW_WORKER_HOSTS"  # read by jobs/train/cluster.py with JOB_COMPLETION_INDEX
# Backstop when Airflow itself dies mid-task: the finished Job (and, owned by it, the Service) is
# garbage-collected by Kubernetes after this long.
TTL_AFTER_FINISHED = 3600


def worker_hosts(job: str, namespace: str, port: int, workers: int) -> list[str]:
    """Stable addresses of an Indexed Job's pods behind a headless Service named like the Job:
    pod hostname <job>-<index>, subdomain <job>."""
    return [f"{job}-{i}.{job}.{namespace}.svc:{port}" for i in range(workers)]


class TrainingJobOperator(KubernetesJobOperator):
    """KubernetesJobOperator for a tf-multiworker stage: the worker count and GPUs per worker may be
    Jinja ("{{ params.workers }}"); the image, resources and tolerations follow the rendered GPU count."""

    template_fields: Sequence[str] = (*KubernetesJobOperator.template_fields, "num_workers", "num_gpus")
    ui_color = "#ffe4b5"

    def __init__(
        self,
        *,
        stage: Stage,
        config: KubernetesConfig,
        num_workers: int | str | None = None,
        num_gpus: int | str | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            completion_mode="Indexed",
            backoff_limit=0,
            ttl_seconds_after_finished=TTL_AFTER_FINISHED,
            wait_until_job_complete=True,
            deferrable=True,
            get_logs=True,
            **kwargs,
        )
        self.stage = stage
        self.config = config
        self.num_workers = stage.resources.workers if num_workers is None else num_workers
        self.num_gpus = stage.resources.gpu if num_gpus is None else num_gpus
        if isinstance(self.num_workers, int):
            _ = self.workers  # validate now when it is known at parse time
        self.service: k8s.V1Service | None = None
        self._finished_pods: list[k8s.V1Pod] = []

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

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.arguments = command_args(self.arguments or [])

    # ---- manifests (no cluster needed)
    def build_job_request_obj(self, context: Any | None = None) -> k8s.V1Job:
        """The provider's Job, sized by the rendered worker/GPU counts, its pods placed behind the
        headless Service (subdomain) and told every worker's address."""
        resources = replace(self.stage.resources, workers=self.workers, gpu=self.gpus)
        self.parallelism = self.completions = resources.workers
        self.image = self.config.image(image_role(replace(self.stage, resources=resources)))
        self.container_resources = container_resources(resources)
        self.tolerations = gpu_tolerations(resources) or []
        job = super().build_job_request_obj(context)
        name, namespace = job.metadata.name, job.metadata.namespace
        pod = job.spec.template.spec
        pod.subdomain = name
        (container,) = pod.containers
        hosts = worker_hosts(name, namespace, self.config.tf_port, resources.workers)
        container.env = [*(container.env or []), k8s.V1EnvVar(name=HOSTS_VAR, value=",".join(hosts))]
        container.ports = [k8s.V1ContainerPort(name="tf", container_port=self.config.tf_port)]
        self.service = self.build_service(job)
        return job

    def build_service(self, job: k8s.V1Job, uid: str | None = None) -> k8s.V1Service:
        """The headless Service of `job`'s pods, owned by the Job once it exists (`uid`), so deleting
        the Job (or its TTL running out) deletes the Service too."""
        name, port = job.metadata.name, self.config.tf_port
        owner = (
            [k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=name, uid=uid)] if uid else None
        )
        return k8s.V1Service(
            api_version="v1",
            kind="Service",
            metadata=k8s.V1ObjectMeta(
                name=name,
                namespace=job.metadata.namespace,
                labels={**stage_labels(self.stage), JOB_NAME_LABEL: name},
                owner_references=owner,
            ),
            spec=k8s.V1ServiceSpec(
                cluster_ip="None",
                selector={JOB_NAME_LABEL: name},
                # DNS records before readiness: workers look each other up while starting.
                publish_not_ready_addresses=True,
                ports=[k8s.V1ServicePort(name="tf", port=port, target_port=port, protocol="TCP")],
            ),
        )

    def manifests(self, context: Any | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(headless Service, Indexed Job) as plain dicts, exactly what execute() submits."""
        from kubernetes.client import ApiClient

        api = ApiClient()
        job = api.sanitize_for_serialization(self.build_job_request_obj(context))
        return api.sanitize_for_serialization(self.service), job

    # ---- execution (needs a cluster)
    def create_job(self, job_request_obj: k8s.V1Job) -> k8s.V1Job:
        created = self.hook.create_job(job=job_request_obj)
        self.service = self.build_service(job_request_obj, uid=created.metadata.uid)
        try:
            self.client.create_namespaced_service(job_request_obj.metadata.namespace, self.service)
        except Exception:
            self.job = job_request_obj  # workers without their Service would wait forever: remove them
            self.delete_job_and_service()
            raise
        return job_request_obj

    def post_complete_action(self, *, pod, remote_pod, context, result, **kwargs) -> None:
        # The provider calls this for every worker pod it watched, with the pod as last read: keep it,
        # its container status tells a bad input (exit 2) even once the pod is deleted.
        self._finished_pods.append(remote_pod)
        super().post_complete_action(pod=pod, remote_pod=remote_pod, context=context, result=result, **kwargs)

    def execute(self, context: Any):
        self._finished_pods = []
        deferred = False
        try:
            return super().execute(context)
        except TaskDeferred:
            deferred = True
            raise  # the trigger waits; execute_complete finishes and cleans up
        except AirflowException:
            self._fail_on_bad_input()
            raise
        finally:
            if not deferred:
                self.delete_job_and_service()

    def execute_complete(self, context: Any, event: dict, **kwargs):
        self._finished_pods = []
        job = event.get("job") or {}
        if self.job is None and job.get("metadata"):
            meta = job["metadata"]
            self.job = k8s.V1Job(metadata=k8s.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"]))
        try:
            return super().execute_complete(context, event, **kwargs)
        except AirflowException:
            self._fail_on_bad_input()
            raise
        finally:
            self.delete_job_and_service()

    def _fail_on_bad_input(self) -> None:
        """A worker that exited 2 (bad input) fails the task without retries: the watched pods as the
        provider last read them, and every pod the Job still has."""
        pods = list(self._finished_pods)
        if self.job is not None:
            try:
                pods += self.client.list_namespaced_pod(
                    self.job.metadata.namespace, label_selector=f"{JOB_NAME_LABEL}={self.job.metadata.name}"
                ).items
            except Exception as exc:  # the Job's own failure is reported either way
                self.log.warning("could not list the pods of %s: %s", self.job.metadata.name, exc)
        fail_on_bad_input(pods, self.base_container_name, self.task_id)

    def delete_job_and_service(self) -> None:
        from kubernetes.client.rest import ApiException

        if self.job is None:
            return
        name, namespace = self.job.metadata.name, self.job.metadata.namespace
        for kind, delete in (
            ("job", self.job_client.delete_namespaced_job),
            ("service", self.client.delete_namespaced_service),
        ):
            try:
                delete(name=name, namespace=namespace, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    self.log.warning("could not delete %s %s: %s", kind, name, exc)

    def on_kill(self) -> None:
        super().on_kill()
        self.delete_job_and_service()


def tf_multiworker_task(stage: Stage, cfg: KubernetesConfig, **kwargs: Any) -> TrainingJobOperator:
    """A stage's `--workers N` (the local launcher's option, possibly Jinja) becomes the number of pods
    (completions = parallelism); inside a pod the job is one worker of the cluster."""
    args = [str(a) for a in stage.args]
    workers: int | str = stage.resources.workers
    if "--workers" in args[:-1]:
        i = args.index("--workers")
        workers = args[i + 1]
        del args[i : i + 2]
    # Image, resources and tolerations depend on the GPU count, which may be Jinja: placeholders here,
    # set from the rendered count in build_job_request_obj.
    pod_kwargs = pod_operator_kwargs(replace(stage, resources=replace(stage.resources, gpu=0)), cfg)
    return TrainingJobOperator(
        task_id=stage.task_id,
        name=dns_name(stage.task_id, 40),  # + the provider's "job-" prefix and random suffix: <= 53
        stage=stage,
        config=cfg,
        arguments=args,
        num_workers=workers,
        on_finish_action="delete_pod",
        **pod_kwargs,
        **task_kwargs(stage),
        **kwargs,
    )
