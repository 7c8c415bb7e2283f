"""The Kubernetes backend without a cluster: every manifest is rendered by the real operators (the
SparkKubernetesOperator's CustomObjectLauncher body, KubernetesPodOperator.build_pod_request_obj,
KubernetesJobOperator.build_job_request_obj) and validated against the Kubernetes schemas
(kubernetes-validate) and the SparkApplication v1beta2 CRD. What the operators do once the cluster
answers (log lines, exit code 2, deleting the training Job and Service) runs the real operators and the
real Kubernetes client against a recording API endpoint on loopback (ApiServer below)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import sys
import threading
from dataclasses import replace
from types import SimpleNamespace

import jsonschema
import kubernetes_validate
import pendulum
import pytest
import yaml
from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from colliderflow.backends import stage_task
from colliderflow.backends.kubernetes import kubernetes_task
from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.exit_codes import fail_on_bad_input, terminated_state
from colliderflow.backends.kubernetes.manifest import spark_memory
from colliderflow.backends.kubernetes.spark_application import IN_CLUSTER_MASTER
from colliderflow.backends.kubernetes.training_job import JOB_NAME_LABEL, TrainingJobOperator
from colliderflow.backends.local import LocalStageOperator
from colliderflow.stages import Resources, Stage
from jobs.train.cluster import cluster_info, tf_config_from_env
from tests.conftest import ROOT

K8S_VERSION = "1.37.0"
CFG = KubernetesConfig(
    spark_image="registry.example/cf/spark:9.9",
    tensorflow_image="registry.example/cf/tf:9.9",
    tensorflow_gpu_image="registry.example/cf/tf:9.9-gpu",
    namespace="physics",
)
SECRET_WORDS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "oci-key", "PRIVATE KEY")


def validate_k8s(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


class ApiServer(http.server.ThreadingHTTPServer):
    """A Kubernetes API endpoint on loopback that records every request and answers from `pods`
    (name -> V1Pod dict): list/get/log/patch/delete of pods, create/delete of Jobs and Services."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.pods: dict[str, dict] = {}
        self.logs: dict[str, str] = {}
        super().__init__(("127.0.0.1", 0), ApiHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ApiHandler(http.server.BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, *args) -> None:
        pass

    def _answer(self, body: dict | str, status: int = 200) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        path = self.path.split("?")[0]
        self.server.requests.append((self.command, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        pod = re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)(/log)?", path)
        if self.command == "POST":
            body.setdefault("metadata", {})["uid"] = f"uid-{len(self.server.requests)}"
            self._answer(body, 201)
        elif self.command == "DELETE":
            self._answer({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        elif path.endswith("/pods"):
            self._answer({"kind": "PodList", "apiVersion": "v1", "items": list(self.server.pods.values())})
        elif pod and pod.group(2):
            self._answer(self.server.logs.get(pod.group(1), ""))
        elif pod and pod.group(1) in self.server.pods:
            self._answer(self.server.pods[pod.group(1)])
        else:
            self._answer({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}, 404)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


@pytest.fixture
def api_server():
    server = ApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path, monkeypatch, request):
    """The operators' Airflow connection (kubernetes_default, from the environment as a deployment may
    set it) names a kubeconfig: one for the loopback ApiServer when the test has one, else for a closed
    loopback port (rendering manifests makes no request)."""
    server = request.getfixturevalue("api_server").url if "api_server" in request.fixturenames else None
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server or "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "test"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(path)}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CFG.kubernetes_conn_id.upper()}", json.dumps(connection))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def fake_ti() -> SimpleNamespace:
    """The task instance fields the operators read (labels) and its XCom pushes, recorded."""
    pushed: dict[str, object] = {}
    return SimpleNamespace(
        dag_id="d",
        task_id="train",
        try_number=1,
        map_index=-1,
        run_id="r",
        pushed=pushed,
        xcom_push=lambda key, value, **_: pushed.__setitem__(key, value),
    )


def task_context(params: dict | None = None) -> dict:
    ti = fake_ti()
    return {
        "params": params or {},
        "ti": ti,
        "run_id": "r",
        "dag": SimpleNamespace(dag_id="d"),
        "dag_run": SimpleNamespace(run_id="r"),
    }


def terminated_pod(name: str, exit_code: int | None, container: str = "base", message: str = "") -> k8s.V1Pod:
    """A pod as the API server reports it once its container ended with `exit_code` (None: running)."""
    state = (
        k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
        if exit_code is None
        else k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, reason="Error", message=message)
        )
    )
    phase = "Running" if exit_code is None else "Succeeded" if exit_code == 0 else "Failed"
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(name=name, namespace="physics", labels={"colliderflow/stage": "x"}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name=container, image="i")]),
        status=k8s.V1PodStatus(
            phase=phase,
            container_statuses=[
                k8s.V1ContainerStatus(
                    name=container, image="i", image_id="", ready=False, restart_count=0, state=state
                )
            ],
        ),
    )


@pytest.fixture(scope="module")
def spark_schema(shared_dir):
    crd = yaml.safe_load((shared_dir / "schemas" / "sparkoperator.k8s.io_sparkapplications.yaml").read_text())
    (v1beta2,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    return v1beta2["schema"]["openAPIV3Schema"]


def pod_dict(pod) -> dict:
    return ApiClient().sanitize_for_serialization(pod)


def assert_no_literal_credentials(obj) -> None:
    """Credentials come by reference (envFrom secretRef / secret volume), never as values."""
    text = json.dumps(obj)
    for env in _walk_env(obj):
        assert "value" not in env or not any(w in env["name"] for w in SECRET_WORDS), env
    assert "PRIVATE KEY" not in text


def _walk_env(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _walk_env(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk_env(item)


def test_spark_stage_renders_a_valid_spark_application(spark_schema):
    stage = Stage(
        task_id="dimuon_reduce",
        module="dimuon",
        kind="spark",
        args=["--input", "s3://b/x/*.root", "--output", "s3://b/out", "--master", "local[*]"],
        resources=Resources(cpu=2, memory="3Gi", executors=5, executor_cores=3, executor_memory="6g"),
    )
    op = kubernetes_task(stage, CFG)
    assert isinstance(op, SparkKubernetesOperator)
    assert op.get_logs and op.logging_interval == CFG.logging_interval_seconds  # the driver's log
    body = op.application_body()
    jsonschema.validate(body, spark_schema)
    spec = body["spec"]
    assert body["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and body["kind"] == "SparkApplication"
    assert body["metadata"]["name"] == "dimuon-reduce" and body["metadata"]["namespace"] == "physics"
    assert (spec["type"], spec["pythonVersion"], spec["image"]) == ("Python", "3", CFG.spark_image)
    assert spec["mainApplicationFile"] == "local:///opt/colliderflow/src/jobs/dimuon/__main__.py"
    assert spec["arguments"] == [
        "--input",
        "s3://b/x/*.root",
        "--output",
        "s3://b/out",
        "--master",
        IN_CLUSTER_MASTER,
    ]
    assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (2, "3g")
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (
        5,
        3,
        "6g",
    )
    assert spec["driver"]["serviceAccount"] == CFG.spark_service_account
    assert spec["restartPolicy"]["type"] in ("Never", "OnFailure", "Always")
    conf = spec["sparkConf"]
    # the stage writes its event log through fsspec (--event-log-dir): no Hadoop connector needed
    assert not any(key.startswith(("spark.eventLog", "spark.hadoop.fs.s3a")) for key in conf)
    assert conf["spark.ui.prometheus.enabled"] == "true"
    assert conf["spark.metrics.conf.*.sink.prometheusServlet.class"].endswith("PrometheusServlet")
    for role in ("driver", "executor"):
        assert {"secretRef": {"name": CFG.storage_secret, "optional": True}} in spec[role]["envFrom"]
    assert_no_literal_credentials(body)


def test_templated_executor_counts_become_integers(spark_schema):
    stage = Stage(
        task_id="s",
        module="dimuon",
        kind="spark",
        resources=Resources(executors="{{ params.executors }}", executor_cores="{{ params.cores }}"),
    )
    op = kubernetes_task(stage, CFG)
    op.render_template_fields({"params": {"executors": 7, "cores": 2}})
    spec = op.application_body()["spec"]
    assert (spec["executor"]["instances"], spec["executor"]["cores"]) == (7, 2)
    jsonschema.validate(op.application_body(), spark_schema)


def test_python_stage_renders_a_valid_pod_with_gpu_and_secret_refs():
    stage = Stage(
        task_id="evaluate_model",
        module="evaluate",
        args=["--model", "s3://b/m", "--output", "s3://b/e"],
        resources=Resources(cpu=4, memory="8Gi", gpu=2),
    )
    op = kubernetes_task(stage, CFG)
    assert isinstance(op, KubernetesPodOperator)
    assert op.get_logs and op.logging_interval == CFG.logging_interval_seconds  # logs, deferrable too
    pod = pod_dict(op.build_pod_request_obj(dry_run=True))
    validate_k8s(pod)
    (c,) = pod["spec"]["containers"]
    assert c["image"] == CFG.tensorflow_gpu_image
    assert c["command"] == ["python", "-m", "jobs.evaluate"] and c["args"] == list(stage.args)
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert c["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "2"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert {"secretRef": {"name": CFG.storage_secret, "optional": True}} in c["envFrom"]
    assert any(v.get("secret", {}).get("secretName") == CFG.storage_secret for v in pod["spec"]["volumes"])
    assert pod["metadata"]["namespace"] == "physics"
    assert_no_literal_credentials(pod)

    cpu_only = pod_dict(
        kubernetes_task(Stage(task_id="m", module="metrics"), CFG).build_pod_request_obj(dry_run=True)
    )
    validate_k8s(cpu_only)
    assert cpu_only["spec"]["containers"][0]["image"] == CFG.tensorflow_image
    assert "nvidia.com/gpu" not in cpu_only["spec"]["containers"][0]["resources"]["limits"]


def worker_env(job: dict, index: int) -> dict[str, str]:
    """What the training container of worker `index` sees: its env plus the JOB_COMPLETION_INDEX that
    the Job controller sets on each pod of an Indexed Job."""
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return {**{e["name"]: e.get("value", "") for e in c["env"]}, "JOB_COMPLETION_INDEX": str(index)}


def test_training_is_one_indexed_job_behind_a_headless_service():
    stage = Stage(
        task_id="train_model",
        module="train",
        kind="tf-multiworker",
        args=["--epochs", "3"],
        resources=Resources(cpu=2, memory="6Gi", workers=4),
    )
    op = kubernetes_task(stage, CFG)
    assert isinstance(op, TrainingJobOperator) and isinstance(op, KubernetesJobOperator)
    assert op.deferrable and op.get_logs and op.wait_until_job_complete
    service, job = op.manifests(task_context())
    validate_k8s(service)
    validate_k8s(job)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["backoffLimit"] == 0  # one lost worker fails the whole Job at once
    name = job["metadata"]["name"]
    assert len(name) <= 53 and job["metadata"]["namespace"] == "physics"  # room for "-<index>" hostnames
    assert service["metadata"]["name"] == name and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {JOB_NAME_LABEL: name}
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name and pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["image"] == CFG.tensorflow_image and c["command"] == ["python", "-m", "jobs.train"]
    assert c["args"] == ["--epochs", "3"]
    assert c["ports"][0]["containerPort"] == CFG.tf_port
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "6Gi"}
    assert "TF_CONFIG" not in worker_env(job, 0)
    # The training code's own derivation, per worker: pod <job>-<i> of subdomain <job> is worker i.
    hosts = [f"{name}-{i}.{name}.physics.svc:{CFG.tf_port}" for i in range(4)]
    for i in range(4):
        config = tf_config_from_env(worker_env(job, i))
        assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        assert cluster_info(worker_env(job, i)).is_chief == (i == 0)
    assert_no_literal_credentials(job)
    _, again = op.manifests(task_context())
    assert again["metadata"]["name"] != name  # every try gets its own Job (and Service)


def job_event(op: TrainingJobOperator, status: str, pods: list[str]) -> dict:
    job = {"metadata": {"name": "job-train-abc", "namespace": "physics"}}
    message = "Job failed with error: BackoffLimitExceeded" if status == "error" else "Job completed"
    return {"status": status, "message": message, "job": job, "pod_names": pods, "pod_namespace": "physics"}


@pytest.mark.parametrize("outcome", ["success", "worker_failed", "bad_input"])
def test_training_job_logs_and_is_deleted_with_its_service_whatever_the_outcome(outcome, api_server, capsys):
    """The deferrable path as the triggerer resumes it: the chief's log lines reach the task log, a
    worker exiting 2 fails the task without retries, and the Job and its Service are deleted."""
    stage = Stage(task_id="train", module="train", kind="tf-multiworker", resources=Resources(workers=2))
    op = kubernetes_task(stage, CFG)
    exit_code = {"success": 0, "worker_failed": 137, "bad_input": 2}[outcome]
    for i, code in enumerate([0, exit_code] if outcome != "success" else [0, 0]):
        pod = ApiClient().sanitize_for_serialization(terminated_pod(f"job-train-abc-{i}", code))
        api_server.pods[pod["metadata"]["name"]] = pod
    api_server.logs["job-train-abc-0"] = "epoch 1/3 loss=0.69\nchief says hello\n"
    event = job_event(op, "success" if outcome == "success" else "error", sorted(api_server.pods))
    context = task_context()
    if outcome == "success":
        op.execute_complete(context, event)
        assert "logs: chief says hello" in capsys.readouterr().out  # the task log (structlog to stdout)
    elif outcome == "worker_failed":
        with pytest.raises(AirflowException, match="BackoffLimitExceeded") as err:
            op.execute_complete(context, event)
        assert not isinstance(err.value, AirflowFailException)  # retried as usual
    else:
        with pytest.raises(AirflowFailException, match="job-train-abc-1 exited with 2"):
            op.execute_complete(context, event)
    assert context["ti"].pushed["job"] == event["job"]
    deleted = [path for method, path in api_server.requests if method == "DELETE"]
    assert "/apis/batch/v1/namespaces/physics/jobs/job-train-abc" in deleted
    assert "/api/v1/namespaces/physics/services/job-train-abc" in deleted


def test_training_job_creates_its_service_owned_by_the_job(api_server):
    """create_job, the step execute() takes before deferring: the Job, then its headless Service with
    an owner reference to the Job's uid (deleting the Job, or its TTL, deletes the Service)."""
    stage = Stage(task_id="train", module="train", kind="tf-multiworker", resources=Resources(workers=3))
    op = kubernetes_task(stage, CFG)
    job = op.build_job_request_obj(task_context())
    op.create_job(job)
    posts = [path for method, path in api_server.requests if method == "POST"]
    assert posts == ["/apis/batch/v1/namespaces/physics/jobs", "/api/v1/namespaces/physics/services"]
    owner = op.service.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Job", job.metadata.name, "uid-1")
    validate_k8s(ApiClient().sanitize_for_serialization(op.service))
    op.job = job
    op.on_kill()
    deleted = [path for method, path in api_server.requests if method == "DELETE"]
    assert f"/api/v1/namespaces/physics/services/{job.metadata.name}" in deleted


def test_exit_code_read_from_pod_status():
    """The retry contract's input: the stage container's terminated state in a pod status."""
    assert terminated_state(terminated_pod("p", 2), "base").exit_code == 2
    assert terminated_state(terminated_pod("p", None), "base") is None
    assert terminated_state(terminated_pod("p", 2, container="sidecar"), "base") is None
    assert terminated_state(k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p")), "base") is None
    fail_on_bad_input(
        [terminated_pod("a", 0), terminated_pod("b", 1), terminated_pod("c", None)], "base", "t"
    )
    with pytest.raises(
        AirflowFailException, match=r"t: pod b exited with 2 .*: error: --input: no such file"
    ):
        fail_on_bad_input(
            [
                terminated_pod("a", 0),
                terminated_pod("b", 2, message="Traceback?\nerror: --input: no such file"),
            ],
            "base",
            "t",
        )


@pytest.mark.parametrize("kind", ["python", "spark"])
@pytest.mark.parametrize("exit_code", [2, 1])
def test_exit_2_fails_pod_and_spark_tasks_without_retries(kind, exit_code, api_server):
    """The provider's own cleanup of a finished pod / Spark driver (delete, then raise for a failure):
    exit 2 becomes AirflowFailException (no retries), any other failure stays retryable."""
    op = kubernetes_task(Stage(task_id="s", module="dimuon", kind=kind), CFG)
    container = op.base_container_name
    assert container == ("spark-kubernetes-driver" if kind == "spark" else "base")
    pod = terminated_pod("s-driver" if kind == "spark" else "s", exit_code, container=container)
    api_server.pods[pod.metadata.name] = ApiClient().sanitize_for_serialization(pod)
    with pytest.raises(AirflowException) as err:
        op.cleanup(pod, pod)
    assert isinstance(err.value, AirflowFailException) == (exit_code == 2), err.value
    deleted = [path for method, path in api_server.requests if method == "DELETE"]
    assert deleted == [  # the provider's own cleanup still ran: the pod / SparkApplication is deleted
        "/api/v1/namespaces/physics/pods/s"
        if kind == "python"
        else "/apis/sparkoperator.k8s.io/v1beta2/namespaces/physics/sparkapplications/s"
    ]


def test_configuration_from_environment(monkeypatch):
    monkeypatch.setenv("COLLIDERFLOW_K8S_SPARK_IMAGE", "my.registry/spark:1")
    monkeypatch.setenv("COLLIDERFLOW_K8S_NAMESPACE", "hep")
    monkeypatch.setenv("COLLIDERFLOW_K8S_TF_PORT", "3333")
    cfg = KubernetesConfig.load()
    assert (cfg.spark_image, cfg.namespace, cfg.tf_port) == ("my.registry/spark:1", "hep", 3333)
    assert cfg.storage_secret == "colliderflow-storage"  # the chart's <release>-storage
    monkeypatch.setenv("COLLIDERFLOW_K8S_TF_PORT", "twenty")
    with pytest.raises(ValueError, match="COLLIDERFLOW_K8S_TF_PORT"):
        KubernetesConfig.load()
    assert spark_memory("512Mi") == "512m" and spark_memory("2g") == "2g"
    assert spark_memory("{{ params.executor_memory }}") == "{{ params.executor_memory }}"  # a Param's pattern
    with pytest.raises(ValueError, match="memory"):
        spark_memory("lots")


def test_kubernetes_refuses_a_run_root_the_pods_cannot_share(monkeypatch):
    from colliderflow.inputs import inputs_present

    assert CFG.run_root_problem("s3://physics/cf/runs") is None
    problem = CFG.run_root_problem("/opt/airflow/out/demo/runs")
    assert "no shared volume" in problem and "COLLIDERFLOW_STORAGE_ROOT" in problem and len(problem) < 500
    shared = replace(CFG, work_volume_claim="cf-work", work_mount="/work")
    assert shared.run_root_problem("/work/runs") is None
    assert "not below the shared volume" in shared.run_root_problem("/workspace/runs")
    # the first task of every DAG says it before any stage starts, without retries
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "kubernetes")
    monkeypatch.setenv("COLLIDERFLOW_ALLOWED_ROOTS", "/opt/airflow/out, s3://physics")
    with pytest.raises(AirflowFailException, match="output_root='/opt/airflow/out/demo/runs' is a local"):
        inputs_present({"input": "s3://physics/in/*.root"}, output_root="/opt/airflow/out/demo/runs")
    assert inputs_present({"input": "s3://physics/in/*.root"}, output_root="s3://physics/cf/runs") is True


def test_run_root_from_the_deployment_storage_root(monkeypatch):
    from colliderflow.dagkit import data_root

    monkeypatch.setenv("COLLIDERFLOW_STORAGE_ROOT", "s3://physics/cf/")
    assert data_root() == "s3://physics/cf"
    monkeypatch.delenv("COLLIDERFLOW_STORAGE_ROOT")
    monkeypatch.setenv("COLLIDERFLOW_DATA", "/data/cf")
    assert data_root() == "/data/cf"


def test_backend_switch_needs_no_dag_change(monkeypatch):
    stage = Stage(
        task_id="train",
        module="train",
        kind="tf-multiworker",
        args=["--epochs", "1"],
        resources=Resources(workers=3),
    )
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "local")
    local = stage_task(stage)
    assert isinstance(local, LocalStageOperator)
    assert local.command()[-4:] == ["--epochs", "1", "--workers", "3"]
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "kubernetes")
    assert isinstance(stage_task(stage), TrainingJobOperator)


def test_cms_dimuon_dag_on_kubernetes_submits_a_spark_application(monkeypatch, spark_schema):
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "kubernetes")
    spec = importlib.util.spec_from_file_location("cms_dimuon_k8s", ROOT / "dags" / "cms_dimuon.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cms_dimuon_k8s", module)
    spec.loader.exec_module(module)
    dag = module.dag
    op = dag.get_task("dimuon")
    assert isinstance(op, SparkKubernetesOperator)
    for task in dag.tasks:
        assert not isinstance(task, LocalStageOperator), task.task_id
    params = {k: dag.params[k] for k in dag.params}
    params["output_root"] = "s3://colliderflow/runs"
    context = {
        "params": params,
        "run_id": "manual__2026-11-25T10:00:00+00:00",
        "dag": dag,
        "dag_run": SimpleNamespace(
            logical_date=pendulum.datetime(2026, 11, 25, tz="UTC"),
            partition_key=None,
            run_type="manual",
            run_after=None,
        ),
        "ti": SimpleNamespace(dag_id=dag.dag_id, xcom_pull=lambda task_ids=None, **_: MANIFESTS),
    }
    op.render_template_fields(context)
    body = op.application_body()
    jsonschema.validate(body, spark_schema)
    args = body["spec"]["arguments"]
    run = "s3://colliderflow/runs/cms_dimuon/manual__2026-11-25T10-00-00-00-00"
    assert args[args.index("--output") + 1] == f"{run}/dimuon"
    assert args[args.index("--event-log-dir") + 1] == f"{run}/spark-events"
    assert args[args.index("--master") + 1] == IN_CLUSTER_MASTER
    assert not any("{{" in a for a in args)


def test_a_dag_with_every_kind_serializes():
    """What the DAG processor stores for the scheduler and UI (custom operators included)."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("k8s_every_kind", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), schedule=None) as dag:
        spark = kubernetes_task(
            Stage(task_id="s", module="dimuon", kind="spark", args=["--o", "{{ run_id }}"]), CFG
        )
        pod = kubernetes_task(Stage(task_id="p", module="metrics", args=["--o", "{{ run_id }}"]), CFG)
        train = kubernetes_task(
            Stage(task_id="t", module="train", kind="tf-multiworker", resources=Resources(workers=2)), CFG
        )
        spark >> pod >> train
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert {"arguments", "num_workers", "num_gpus"} <= set(restored.get_task("t").template_fields)
    assert restored.get_task("s").template_spec["spark"]["spec"]["arguments"] == ["--o", "{{ run_id }}"]
    assert restored.get_task("p").upstream_task_ids == {"s"}


def test_worker_count_from_a_param_on_both_backends(monkeypatch):
    """`--workers {{ params.workers }}`: N local processes locally, N pods (each one worker) on Kubernetes."""
    stage = Stage(task_id="train", module="train", kind="tf-multiworker",
                  args=["--epochs", "1", "--workers", "{{ params.workers }}"])  # fmt: skip
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "local")
    local = stage_task(stage)
    local.render_template_fields({"params": {"workers": 3}})
    assert local.command()[-4:] == ["--epochs", "1", "--workers", "3"]
    op = kubernetes_task(stage, CFG)
    op.render_template_fields({"params": {"workers": 3}})
    service, job = op.manifests()
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--epochs", "1"]  # no --workers inside a pod: each is one worker
    for i in range(3):
        config = tf_config_from_env(worker_env(job, i))
        assert config["task"]["index"] == i and len(config["cluster"]["worker"]) == 3
    zero = kubernetes_task(stage, CFG)
    zero.render_template_fields({"params": {"workers": 0}})
    with pytest.raises(ValueError, match="worker count must be >= 1"):
        zero.manifests()


def test_shared_work_volume_in_every_kind(spark_schema):
    """jobs.train needs a filesystem all workers share: a RWX claim mounted everywhere when configured."""

    cfg = replace(CFG, work_volume_claim="cf-work", work_mount="/work")
    body = kubernetes_task(Stage(task_id="s", module="prepare", kind="spark"), cfg).application_body()
    jsonschema.validate(body, spark_schema)
    assert body["spec"]["volumes"] == [{"name": "work", "persistentVolumeClaim": {"claimName": "cf-work"}}]
    for role in ("driver", "executor"):
        assert body["spec"][role]["volumeMounts"] == [{"name": "work", "mountPath": "/work"}]
    _, job = kubernetes_task(
        Stage(task_id="t", module="train", kind="tf-multiworker", resources=Resources(workers=2)), cfg
    ).manifests()
    validate_k8s(job)
    pod = pod_dict(
        kubernetes_task(Stage(task_id="e", module="evaluate"), cfg).build_pod_request_obj(dry_run=True)
    )
    validate_k8s(pod)
    for p in [job["spec"]["template"], pod]:
        assert {"name": "work", "persistentVolumeClaim": {"claimName": "cf-work"}} in p["spec"]["volumes"]
        assert {"name": "work", "mountPath": "/work"} in p["spec"]["containers"][0]["volumeMounts"]
    default = kubernetes_task(Stage(task_id="s", module="prepare", kind="spark"), CFG).application_body()
    assert "volumes" not in default["spec"]


def test_flags_switched_by_params_on_every_backend(monkeypatch):
    """flag("--bucketing", "params.b"): present when true, absent (not an empty argument) when false."""
    from colliderflow.stages import flag

    for kind in ("python", "spark", "tf-multiworker"):
        stage = Stage(
            task_id="t", module="train", kind=kind, args=["--epochs", "2", flag("--bucketing", "params.b")]
        )
        for on in (True, False):
            expected = ["--epochs", "2", "--bucketing"] if on else ["--epochs", "2"]
            monkeypatch.setenv("COLLIDERFLOW_BACKEND", "local")
            local = stage_task(stage)
            local.render_template_fields({"params": {"b": on}})
            assert local.command()[3:] == expected + (["--workers", "1"] if kind == "tf-multiworker" else [])
            op = kubernetes_task(stage, CFG)
            op.render_template_fields({"params": {"b": on}})
            if kind == "spark":
                assert op.application_body()["spec"]["arguments"] == expected
            elif kind == "python":
                assert op.build_pod_request_obj(dry_run=True).spec.containers[0].args == expected
            else:
                job = op.manifests()[1]
                assert job["spec"]["template"]["spec"]["containers"][0]["args"] == expected


def test_gpus_per_training_worker_from_a_param():
    stage = Stage(task_id="train", module="train", kind="tf-multiworker",
                  resources=Resources(workers=2, gpu="{{ params.gpus }}"))  # fmt: skip
    for gpus in (0, 2):
        op = kubernetes_task(stage, CFG)
        op.render_template_fields({"params": {"gpus": gpus}})
        _, job = op.manifests()
        validate_k8s(job)
        pod = job["spec"]["template"]
        for _ in (0,):
            (c,) = pod["spec"]["containers"]
            assert c["image"] == (CFG.tensorflow_gpu_image if gpus else CFG.tensorflow_image)
            assert c["resources"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
            assert bool(pod["spec"].get("tolerations")) == bool(gpus)


def load_dag(path, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"{path.stem}_k8s", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module.dag


MANIFESTS = ["s3://colliderflow/runs/d/partitions/log/00000001.json"]


def run_context(dag, output_root: str) -> dict:
    """What Airflow hands render_template_fields for a scheduled run (only the keys the DAGs use)."""
    params = {k: dag.params[k] for k in dag.params} | {"output_root": output_root}
    times = {"dag_id": dag.dag_id, "run_id": "r", "tasks": [{"task_id": "x", "duration_seconds": 1.0}]}
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="t", try_number=1, map_index=-1,
                         xcom_pull=lambda task_ids=None, **_: MANIFESTS if task_ids == "partition" else times,
                         get_previous_dagrun=lambda state=None: None)  # fmt: skip
    return {
        "params": params,
        "run_id": "scheduled__2026-11-25T02:00:00+00:00",
        "dag": dag,
        "dag_run": SimpleNamespace(
            logical_date=pendulum.datetime(2026, 11, 25, 2, tz="UTC"),
            partition_key=None,
            run_type="scheduled",
            run_after=None,
        ),
        "ti": ti,
        "var": SimpleNamespace(value=SimpleNamespace(get=lambda key, default=None: default)),
    }


@pytest.mark.parametrize("dag_file", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.stem)
def test_every_dag_renders_valid_manifests_on_kubernetes(dag_file, monkeypatch, spark_schema):
    """Each DAG as a Kubernetes deployment parses it: every stage task renders to manifests that the
    API server would accept, with every argument rendered and every output under the run directory."""
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", "kubernetes")
    dag = load_dag(dag_file, monkeypatch)
    root = "s3://colliderflow/runs"
    run = f"{root}/{dag.dag_id}/scheduled__2026-11-25T02-00-00-00-00"
    rendered = 0
    for task in dag.tasks:
        assert not isinstance(task, LocalStageOperator), task.task_id
        if not isinstance(task, KubernetesPodOperator):
            continue  # Airflow-side helpers (branching, stage_times)
        task.render_template_fields(run_context(dag, root))
        if isinstance(task, SparkKubernetesOperator):
            body = task.application_body()
            jsonschema.validate(body, spark_schema)
            args = body["spec"]["arguments"]
        elif isinstance(task, TrainingJobOperator):
            service, job = task.manifests(run_context(dag, root))
            validate_k8s(service)
            validate_k8s(job)
            assert job["spec"]["completionMode"] == "Indexed"
            args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        else:
            pod = pod_dict(task.build_pod_request_obj(dry_run=True))
            validate_k8s(pod)
            args = pod["spec"]["containers"][0]["args"]
        rendered += 1
        assert not [a for a in args if "{{" in a or "{%" in a], (task.task_id, args)
        for option in ("--output", "--event-log-dir"):
            if option in args:
                where = run if task.task_id != "cumulative" else f"{root}/{dag.dag_id}/cumulative"
                assert args[args.index(option) + 1].startswith(where), (task.task_id, option, args)
    assert rendered >= 2  # the stages and collect_metrics at least
