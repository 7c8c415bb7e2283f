"""The DAGs' Params as the trigger form shows them, on each backend: every Param titled, described in
one line and in a known section; optional strings nullable (a "" default opens the form in an error
state); a Param shown only where the backend reads it, and then wired through: the executor sizes
reach the Kubernetes SparkApplication, the Spark master the local command line. A manual run whose
input matches nothing fails at `check_inputs`, naming the Param, before any stage. (The form itself,
in a browser, is tests/ui/test_trigger_form.py.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

import pendulum
import pytest

from colliderflow.params import IN_CLUSTER, SECTIONS
from colliderflow.stages import OMIT
from tests.conftest import ROOT
from tests.dags.conftest import dags_test

DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
EXECUTOR_PARAMS = {"executors", "executor_cores", "executor_memory"}


def load_dag(path, backend: str, monkeypatch):
    monkeypatch.setenv("COLLIDERFLOW_BACKEND", backend)
    spec = importlib.util.spec_from_file_location(f"{path.stem}_{backend}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module.dag


def context(dag, **conf) -> dict:
    params = {k: dag.params[k] for k in dag.params} | {"output_root": "/runs"} | conf
    return {
        "params": params,
        "run_id": "manual__2026-11-25T10:00:00+00:00",
        "dag": dag,
        "dag_run": SimpleNamespace(
            logical_date=pendulum.datetime(2026, 11, 25, tz="UTC"),
            partition_key=None,
            run_type="manual",
            run_after=None,
        ),
        "ti": SimpleNamespace(
            xcom_pull=lambda task_ids=None, **_: MANIFESTS if task_ids == "partition" else None
        ),
    }


# what the partition task hands the stages: the manifests of the run's partitions
MANIFESTS = ["/runs/d/partitions/log/00000001.json", "/runs/d/partitions/log/00000002.json"]


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_every_param_titled_described_and_in_a_section(path, backend, monkeypatch):
    dag = load_dag(path, backend, monkeypatch)
    for name in dag.params:
        param = dag.params.get_param(name)
        schema = param.schema
        assert schema.get("title"), name
        assert schema.get("section") in SECTIONS, (name, schema.get("section"))
        assert param.description and "\n" not in param.description and len(param.description) <= 110, name
        assert param.value != "", f"{name}: an empty-string default reads as a missing required value"
        if param.value is None:
            assert "null" in schema["type"], name
    shown = {n for n in dag.params if "const" not in dag.params.get_param(n).schema}
    if backend == "local":
        assert not EXECUTOR_PARAMS & shown, "executor sizes shown where nothing reads them"
        assert "spark_master" in shown
    else:
        assert EXECUTOR_PARAMS <= shown
        assert "spark_master" not in shown  # the cluster's own master: a constant, hidden by the form


def test_in_cluster_master_is_the_backends():
    from colliderflow.backends.kubernetes.spark_application import IN_CLUSTER_MASTER

    assert IN_CLUSTER == IN_CLUSTER_MASTER


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_executor_params_reach_the_spark_application(path, monkeypatch):
    dag = load_dag(path, "kubernetes", monkeypatch)
    from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

    spark_tasks = [t for t in dag.tasks if isinstance(t, SparkKubernetesOperator)]
    assert spark_tasks
    for task in spark_tasks:
        task.render_template_fields(context(dag, executors=5, executor_cores=3, executor_memory="6g"))
        executor = task.application_body()["spec"]["executor"]
        assert (executor["instances"], executor["cores"], executor["memory"]) == (5, 3, "6g"), task.task_id


def test_tree_passed_only_when_given(monkeypatch):
    for tree, expected in ((None, []), ("Events", ["--tree", "Events"])):
        dag = load_dag(ROOT / "dags" / "cms_dimuon.py", "local", monkeypatch)  # rendering is in place
        task = dag.get_task("dimuon")
        task.render_template_fields(context(dag, tree=tree, spark_master="local[3]"))
        cmd = task.command()
        assert [a for i, a in enumerate(cmd) if a == "--tree" or cmd[i - 1] == "--tree"] == expected
        assert cmd[cmd.index("--master") + 1] == "local[3]"
        assert OMIT not in task.args  # Rendered Templates shows the command line as it runs


def test_manual_run_without_input_fails_naming_the_param(airflow_env, tmp_path):
    runs = tmp_path / "runs"
    missing = f"{tmp_path}/nowhere/*.root"
    proc = dags_test(airflow_env, "cms_dimuon", {"input": [missing], "output_root": str(runs)}, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"input: {missing}: the glob matches no file" in out, out[-3000:]
    assert not runs.exists(), "a stage ran without input"


def test_a_run_outside_the_allowed_data_roots_is_refused_at_the_first_task(airflow_env, tmp_path):
    """A conf that the Params' schema allows (absolute local paths, an extra key) but that leaves the
    deployment's data roots: `check_inputs` fails the run in one line naming each Param and the roots,
    and the unknown key, never retried, before any stage or any write."""
    elsewhere = tempfile.mkdtemp(prefix="cf-outside-the-roots-", dir="/var/tmp")
    try:
        conf = {"input": ["/etc/*.root"], "output_root": f"{elsewhere}/runs", "chunk_entrys": 5000}
        proc = dags_test(airflow_env, "cms_dimuon", conf, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        line = next(line for line in out.splitlines() if "outside the allowed data roots" in line)
        assert f"output_root='{elsewhere}/runs': outside the allowed data roots (" in line, line
        assert "input='/etc/*.root': outside the allowed data roots (" in line, line
        assert "COLLIDERFLOW_ALLOWED_ROOTS" in line
        # a typo was silently ignored, the run taking the default: now named, with the nearest Param
        assert "unknown conf key(s): chunk_entrys (did you mean chunk_entries?)" in line, line
        assert os.listdir(elsewhere) == [], "a stage wrote outside the roots"
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


ODD_PATHS = ["/data/my data/*.root", '/data/it\'s "quoted"', "/data/new\nline/x.root"]


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_input_paths_are_values_not_words(backend, monkeypatch):
    """Issue 28: a space-separated input Param read `my/` and `data/` for "my data". The input Params are
    lists; each path reaches the partition task as one value, spaces, quotes and newlines included, and
    each manifest it chose reaches the stage as one argument, on the local command line and in the
    SparkApplication alike."""
    from colliderflow.stages import values_of

    cases = (
        ("cms_dimuon", "dimuon", {"input": ODD_PATHS}, {"input": ODD_PATHS}),
        ("dl_trigger", "ingest", {"input_qcd": ODD_PATHS, "input_wjets": ["/w"]},
         {"qcd": ODD_PATHS, "wjets": ["/w"]}),
    )  # fmt: skip
    for dag_id, task_id, conf, expected in cases:
        dag = load_dag(ROOT / "dags" / f"{dag_id}.py", backend, monkeypatch)
        partition = dag.get_task("partition")
        partition.render_template_fields(context(dag, **conf))
        if backend == "local":  # the task itself lists the input
            inputs = {k: values_of(v) for k, v in partition.op_kwargs["inputs"].items()}
        else:  # a pod does (python -m jobs.partition --input NAME=PATH ...)
            pairs = [
                a.split("=", 1)
                for i, a in enumerate(partition.arguments)
                if partition.arguments[i - 1] == "--input"
            ]
            inputs = {name: [p for n, p in pairs if n == name] for name, _ in pairs}
        assert {k: inputs[k] for k in expected} == expected, (backend, dag_id, inputs)
        task = dag.get_task(task_id)
        task.render_template_fields(context(dag, **conf))
        args = task.command() if backend == "local" else task.application_body()["spec"]["arguments"]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--manifest"] == MANIFESTS, (backend, dag_id)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_every_text_param_is_bounded(path, monkeypatch):
    """Issue 28: a 1 MB Param reached the command line ("Argument list too long") and was retried; the
    trigger refuses it now. List Params bound their items and their count."""
    dag = load_dag(path, "local", monkeypatch)
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        types = schema.get("type")
        types = [types] if isinstance(types, str) else types or []
        if "string" in types and not ({"enum", "const"} & set(schema)):
            assert 0 < schema["maxLength"] <= 1000, name
        if "array" in types:
            assert schema["maxItems"] and schema["items"]["maxLength"], name
