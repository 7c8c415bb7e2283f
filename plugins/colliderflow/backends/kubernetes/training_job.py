"""Multi-worker TensorFlow training: N worker pods behind one headless Service, created, waited for
and cleaned up together by ONE task (the provider has no operator for a collective that needs every
worker up at once)."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.manifest import dns_name, stage_labels, task_kwargs
from colliderflow.backends.kubernetes.pod import pod_env, pod_operator_kwargs
from colliderflow.stages import Stage, command_args


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
        kwargs["env_vars"] = pod_env(
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
        **task_kwargs(stage),
        **kwargs,
    )
