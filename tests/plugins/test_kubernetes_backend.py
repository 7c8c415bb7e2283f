"""The Kubernetes backend without a cluster: every manifest is rendered by the real operators (the
SparkKubernetesOperator's CustomObjectLauncher body, KubernetesPodOperator.build_pod_request_obj) and
validated against the Kubernetes schemas (kubernetes-validate) and the SparkApplication v1beta2 CRD."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import jsonschema
import kubernetes_validate
import pendulum
import pytest
import yaml
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
from kubernetes.client import ApiClient

from colliderflow.backends import stage_task
from colliderflow.backends.kubernetes import kubernetes_task
from colliderflow.backends.kubernetes.config import KubernetesConfig
from colliderflow.backends.kubernetes.manifest import spark_memory
from colliderflow.backends.kubernetes.spark_application import IN_CLUSTER_MASTER
from colliderflow.backends.kubernetes.training_job import TFMultiWorkerOperator
from colliderflow.backends.local import LocalStageOperator
from colliderflow.stages import Resources, Stage
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
    assert conf["spark.eventLog.enabled"] == "true" and conf["spark.eventLog.dir"] == CFG.event_log_dir
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


def test_tf_multiworker_service_and_pods_each_with_its_own_tf_config():
    stage = Stage(
        task_id="train_model",
        module="train",
        kind="tf-multiworker",
        args=["--epochs", "3"],
        resources=Resources(cpu=2, memory="6Gi", workers=4),
    )
    op = kubernetes_task(stage, CFG)
    assert isinstance(op, TFMultiWorkerOperator)
    service, pods = op.manifests()
    validate_k8s(service)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    job = service["metadata"]["name"]
    assert len(pods) == 4
    expected_hosts = [
        f"{p['spec']['hostname']}.{p['spec']['subdomain']}.physics.svc:{CFG.tf_port}" for p in pods
    ]
    assert len(set(expected_hosts)) == 4
    for i, pod in enumerate(pods):
        validate_k8s(pod)
        assert pod["spec"]["subdomain"] == job
        assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
        (c,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        tf_config = json.loads(env["TF_CONFIG"])
        assert tf_config == {"cluster": {"worker": expected_hosts}, "task": {"type": "worker", "index": i}}
        assert env["COLLIDERFLOW_WORKER_INDEX"] == str(i)
        assert env["COLLIDERFLOW_WORKER_HOSTS"].split(",") == expected_hosts
        assert c["image"] == CFG.tensorflow_image and c["command"] == ["python", "-m", "jobs.train"]
        assert c["args"] == ["--epochs", "3"]
        assert c["ports"][0]["containerPort"] == CFG.tf_port
        assert c["resources"]["requests"] == {"cpu": "2", "memory": "6Gi"}
        assert_no_literal_credentials(pod)


class RecordingCoreV1:
    """Stands in for the API server (none runs here): records calls and plays pod phases back."""

    def __init__(self, phases: list[dict[int, str]]):
        self.calls: list[tuple[str, str]] = []
        self.phases = phases
        self.pods: list[dict] = []

    def create_namespaced_service(self, ns, body):
        self.calls.append(("create_service", body["metadata"]["name"]))
        return SimpleNamespace(metadata=SimpleNamespace(uid="uid-1"))

    def create_namespaced_pod(self, ns, body):
        self.calls.append(("create_pod", body["metadata"]["name"]))
        assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        self.pods.append(body)

    def list_namespaced_pod(self, ns, label_selector):
        self.calls.append(("list", label_selector))
        step = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        return SimpleNamespace(
            items=[
                SimpleNamespace(
                    metadata=SimpleNamespace(name=p["metadata"]["name"]),
                    status=SimpleNamespace(phase=step.get(i, "Running")),
                )
                for i, p in enumerate(self.pods)
            ]
        )

    def read_namespaced_pod_log(self, name, ns, tail_lines):
        return f"log of {name}"

    def delete_namespaced_pod(self, name, ns, grace_period_seconds):
        self.calls.append(("delete_pod", name))

    def delete_namespaced_service(self, name, ns, grace_period_seconds):
        self.calls.append(("delete_service", name))


@pytest.mark.parametrize("outcome", ["success", "one_worker_fails"])
def test_tf_multiworker_starts_all_workers_together_and_always_cleans_up(outcome):
    stage = Stage(task_id="train", module="train", kind="tf-multiworker", resources=Resources(workers=3))
    op = TFMultiWorkerOperator(task_id="train", stage=stage, config=CFG, poll_interval=0)
    service, pods = op.manifests()
    final = {0: "Succeeded", 1: "Succeeded", 2: "Succeeded"} if outcome == "success" else {1: "Failed"}
    core = RecordingCoreV1([{}, {0: "Running"}, final])
    if outcome == "success":
        op.run_workers(core, service, pods)
    else:
        with pytest.raises(Exception, match="worker-1 failed"):
            op.run_workers(core, service, pods)
    kinds = [c[0] for c in core.calls]
    assert kinds[:4] == ["create_service", "create_pod", "create_pod", "create_pod"]  # all before waiting
    assert sorted(n for k, n in core.calls if k == "delete_pod") == sorted(
        p["metadata"]["name"] for p in pods
    )
    assert kinds[-1] == "delete_service"


def test_configuration_from_environment(monkeypatch):
    monkeypatch.setenv("COLLIDERFLOW_K8S_SPARK_IMAGE", "my.registry/spark:1")
    monkeypatch.setenv("COLLIDERFLOW_K8S_NAMESPACE", "hep")
    monkeypatch.setenv("COLLIDERFLOW_K8S_TF_PORT", "3333")
    cfg = KubernetesConfig.load()
    assert (cfg.spark_image, cfg.namespace, cfg.tf_port) == ("my.registry/spark:1", "hep", 3333)
    assert cfg.storage_secret == "colliderflow-storage"  # the chart's <release>-storage
    monkeypatch.setenv("COLLIDERFLOW_STORAGE_ROOT", "s3://physics-bucket/cf/")
    monkeypatch.setenv("COLLIDERFLOW_S3_ENDPOINT", "https://s3.example.org")
    cfg = KubernetesConfig.load()
    assert cfg.event_log_dir == "s3a://physics-bucket/cf/spark-events"
    conf = kubernetes_task(Stage(task_id="s", module="dimuon", kind="spark"), cfg).application_body()["spec"]
    assert conf["sparkConf"]["spark.hadoop.fs.s3a.endpoint"] == "https://s3.example.org"
    assert conf["sparkConf"]["spark.eventLog.dir"] == "s3a://physics-bucket/cf/spark-events"
    monkeypatch.setenv("COLLIDERFLOW_STORAGE_ROOT", "oci://hep@tenancy/cf")
    assert KubernetesConfig.load().event_log_dir == "oci://hep@tenancy/cf/spark-events"
    monkeypatch.setenv("COLLIDERFLOW_K8S_TF_PORT", "twenty")
    with pytest.raises(ValueError, match="COLLIDERFLOW_K8S_TF_PORT"):
        KubernetesConfig.load()
    assert spark_memory("512Mi") == "512m" and spark_memory("2g") == "2g"
    assert spark_memory("{{ params.executor_memory }}") == "{{ params.executor_memory }}"  # a Param's pattern
    with pytest.raises(ValueError, match="memory"):
        spark_memory("lots")


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
    assert isinstance(stage_task(stage), TFMultiWorkerOperator)


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
        "dag_run": SimpleNamespace(logical_date=pendulum.datetime(2026, 11, 25, tz="UTC")),
        "ti": SimpleNamespace(dag_id=dag.dag_id),
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
    assert restored.get_task("t").template_fields == ["arguments", "num_workers", "num_gpus"]
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
    service, pods = op.manifests()
    assert len(pods) == 3
    for i, pod in enumerate(pods):
        (c,) = pod["spec"]["containers"]
        assert c["args"] == ["--epochs", "1"]  # no --workers inside a pod: each is one worker
        assert (
            json.loads(next(e["value"] for e in c["env"] if e["name"] == "TF_CONFIG"))["task"]["index"] == i
        )
    zero = kubernetes_task(stage, CFG)
    zero.render_template_fields({"params": {"workers": 0}})
    with pytest.raises(ValueError, match="worker count must be >= 1"):
        zero.manifests()


def test_shared_work_volume_in_every_kind(spark_schema):
    """jobs.train needs a filesystem all workers share: a RWX claim mounted everywhere when configured."""
    from dataclasses import replace

    cfg = replace(CFG, work_volume_claim="cf-work", work_mount="/work")
    body = kubernetes_task(Stage(task_id="s", module="prepare", kind="spark"), cfg).application_body()
    jsonschema.validate(body, spark_schema)
    assert body["spec"]["volumes"] == [{"name": "work", "persistentVolumeClaim": {"claimName": "cf-work"}}]
    for role in ("driver", "executor"):
        assert body["spec"][role]["volumeMounts"] == [{"name": "work", "mountPath": "/work"}]
    _, pods = kubernetes_task(
        Stage(task_id="t", module="train", kind="tf-multiworker", resources=Resources(workers=2)), cfg
    ).manifests()
    pod = pod_dict(
        kubernetes_task(Stage(task_id="e", module="evaluate"), cfg).build_pod_request_obj(dry_run=True)
    )
    for p in [*pods, pod]:
        validate_k8s(p)
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
                assert op.manifests()[1][0]["spec"]["containers"][0]["args"] == expected


def test_gpus_per_training_worker_from_a_param():
    stage = Stage(task_id="train", module="train", kind="tf-multiworker",
                  resources=Resources(workers=2, gpu="{{ params.gpus }}"))  # fmt: skip
    for gpus in (0, 2):
        op = kubernetes_task(stage, CFG)
        op.render_template_fields({"params": {"gpus": gpus}})
        for pod in op.manifests()[1]:
            validate_k8s(pod)
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


def run_context(dag, output_root: str) -> dict:
    """What Airflow hands render_template_fields for a scheduled run (only the keys the DAGs use)."""
    params = {k: dag.params[k] for k in dag.params} | {"output_root": output_root}
    times = {"dag_id": dag.dag_id, "run_id": "r", "tasks": [{"task_id": "x", "duration_seconds": 1.0}]}
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="t", try_number=1, map_index=-1,
                         xcom_pull=lambda task_ids=None, **_: times)  # fmt: skip
    return {
        "params": params,
        "run_id": "scheduled__2026-11-25T02:00:00+00:00",
        "dag": dag,
        "dag_run": SimpleNamespace(logical_date=pendulum.datetime(2026, 11, 25, 2, tz="UTC")),
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
        if not isinstance(task, KubernetesPodOperator | TFMultiWorkerOperator):
            continue  # Airflow-side helpers (branching, stage_times)
        task.render_template_fields(run_context(dag, root))
        if isinstance(task, SparkKubernetesOperator):
            body = task.application_body()
            jsonschema.validate(body, spark_schema)
            args = body["spec"]["arguments"]
        elif isinstance(task, TFMultiWorkerOperator):
            service, pods = task.manifests(run_context(dag, root))
            validate_k8s(service)
            for pod in pods:
                validate_k8s(pod)
            args = pods[0]["spec"]["containers"][0]["args"]
        else:
            pod = pod_dict(task.build_pod_request_obj(dry_run=True))
            validate_k8s(pod)
            args = pod["spec"]["containers"][0]["args"]
        rendered += 1
        assert not [a for a in args if "{{" in a or "{%" in a], (task.task_id, args)
        for option in ("--output", "--event-log-dir"):
            if option in args:
                assert args[args.index(option) + 1].startswith(run), (task.task_id, option, args)
    assert rendered >= 2  # the stages and collect_metrics at least
