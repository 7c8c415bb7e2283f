"""The Helm charts with the real helm (v4, tests/services/k8s-tools.sh): `helm lint --strict`, `helm
template` with the values a user sets (the README's and docs/deployment.md's own install commands, run
as `helm template`) and with schema-violating values that helm must refuse; every rendered object is
validated against the official Kubernetes schemas (kubernetes-validate, strict), and the dashboards'
queries are checked against real Spark metric names."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shlex
import subprocess
import tempfile

import jsonschema
import pytest
import yaml

from tests.deploy.k8s import K8S_VERSIONS, documents, helm, tool, validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
SPARK_METRICS = pathlib.Path(__file__).parent / "data/spark-4.2.0-prometheus-metrics.txt"
# What jobs.metrics pushes to the Pushgateway (docs/deployment.md, "Metric names"): name -> labels.
PIPELINE_METRICS = {
    "colliderflow_stage_wall_seconds": {"dag", "run", "stage"},
    "colliderflow_events_per_second": {"dag", "run", "stage"},
    "colliderflow_auc": {"dag", "run", "class"},
}
# Values a real install passes on the command line (the README names them; a chart refuses to render
# without them), and the release names the README installs each chart as.
INSTALL_VALUES = {"colliderflow": {}, "spark-dashboard": {"grafana": {"adminPassword": "install-time-pw"}}}
RELEASE = {"colliderflow": "colliderflow", "spark-dashboard": "spark-dashboard"}


def chart_values(chart: str) -> dict:
    return yaml.safe_load((CHARTS / chart / "values.yaml").read_text())


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def template(chart: str, values: dict, namespace: str = "colliderflow", check: bool = True):
    """`helm template <release> charts/<chart> -n <namespace> -f <values>` with the real helm."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        return helm(
            "template", RELEASE[chart], str(CHARTS / chart), "-n", namespace, "-f", f.name, check=check
        )


def render(chart: str, values: dict | None = None, namespace: str = "colliderflow") -> list[dict]:
    return documents(template(chart, deep_merge(INSTALL_VALUES[chart], values or {}), namespace).stdout)


def refused(chart: str, values: dict, namespace: str = "colliderflow") -> str:
    """helm's error for values it must refuse (schema or a template's `required`)."""
    proc = template(chart, values, namespace, check=False)
    assert proc.returncode != 0 and not proc.stdout.strip(), f"helm rendered {chart} with {values}"
    return proc.stderr


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def name(chart: str, suffix: str) -> str:
    return f"{RELEASE[chart]}-{suffix}"


# --- the documented install commands ------------------------------------------------------------------


def install_commands(markdown: pathlib.Path) -> list[list[str]]:
    """Every `helm install ... charts/...` command in a bash block of `markdown`, continuation lines
    joined, comments dropped, a `$(...)` replaced by a fixed word (what the shell would substitute)."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown.read_text(), flags=re.S)
    text = re.sub(r"\\\n", " ", "\n".join(blocks))
    commands = []
    for line in text.splitlines():
        line = re.sub(r"\s#.*$", "", line).strip()
        line = re.sub(r'"?\$\([^)]*\)"?', "generated-value", line)
        words = shlex.split(line) if line.startswith("helm install") else []
        if len(words) > 3 and words[3].startswith("charts/"):  # helm install RELEASE CHART ...
            commands.append(words)
    return commands


@pytest.mark.parametrize("doc", ["README.md", "docs/deployment.md"])
def test_documented_install_commands_render(doc, tmp_path):
    """Each `helm install RELEASE charts/CHART ...` of the docs, run as `helm template` with exactly its
    arguments (files it names exist in the working directory, as the docs tell the user to create)."""
    commands = install_commands(ROOT / doc)
    charts = {words[3] for words in commands}
    assert charts == {"charts/colliderflow", "charts/spark-dashboard"}, charts
    (tmp_path / "charts").symlink_to(CHARTS)
    for words in commands:
        for i, word in enumerate(words[:-1]):
            if word == "--set-file":
                path = tmp_path / words[i + 1].split("=", 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("file-value")
        docs = documents(helm("template", *words[2:], cwd=tmp_path).stdout)
        assert docs, words
        for obj in docs:
            validate(obj)
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == words[2]


def test_real_helm_and_kubectl_from_the_pinned_wheel():
    """tests/services/k8s-tools.sh installs helm v4 and kubectl v1.35, checksummed."""
    assert re.match(r"v4\.1\.4\b", helm("version", "--short").stdout), "not the pinned helm"
    kubectl = subprocess.run([str(tool("kubectl")), "version", "--client"], capture_output=True, text=True)
    assert "Client Version: v1.35.2" in kubectl.stdout, kubectl.stdout + kubectl.stderr
    script = (ROOT / "tests/services/k8s-tools.sh").read_text()
    assert "--require-hashes" in script and script.count("sha256sum -c") >= 2


@pytest.mark.parametrize("chart", sorted(INSTALL_VALUES))
def test_helm_lint_strict(chart, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(INSTALL_VALUES[chart]))
    proc = helm("lint", "--strict", str(CHARTS / chart), "-f", str(values))
    assert "0 chart(s) failed" in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def test_no_unvendored_chart_dependency():
    """The README installs the spark-operator chart on its own: a dependency that charts/ does not hold
    makes `helm install charts/colliderflow` fail."""
    for chart in INSTALL_VALUES:
        meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
        for dep in meta.get("dependencies") or []:
            assert (CHARTS / chart / "charts" / dep["name"]).is_dir(), f"{chart}: {dep['name']} not vendored"
    readme = (ROOT / "README.md").read_text()
    assert "helm install spark-operator spark-operator/spark-operator" in readme


# --- both charts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", sorted(INSTALL_VALUES))
def test_chart_metadata(chart):
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == chart
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert (CHARTS / chart / "values.schema.json").is_file()


@pytest.mark.parametrize("chart", sorted(INSTALL_VALUES))
def test_values_match_schema(chart):
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(chart_values(chart), schema)
    jsonschema.validate(deep_merge(chart_values(chart), INSTALL_VALUES[chart]), schema)


@pytest.mark.parametrize(
    "chart, bad, where",
    [
        ("colliderflow", {"images": {"spark": "colliderflow/spark:latest"}}, "/images/spark"),
        ("colliderflow", {"storageTypo": {}}, "storageTypo"),
        ("spark-dashboard", {"prometheus": {"scrapeInterval": "often"}}, "/prometheus/scrapeInterval"),
        ("spark-dashboard", {"images": {"grafana": "grafana/grafana:latest"}}, "/images/grafana"),
    ],
)
def test_schema_rejects_bad_values(chart, bad, where):
    """values.schema.json as helm applies it: the same values fail jsonschema and `helm template`."""
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    values = deep_merge(chart_values(chart), deep_merge(INSTALL_VALUES[chart], bad))
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(values, schema)
    assert where.rsplit("/", 1)[-1] in str(err.value.path) + err.value.message
    error = refused(chart, deep_merge(INSTALL_VALUES[chart], bad))
    assert "don't meet the specifications of the schema" in error and where in error, error


def test_oci_auth_schema_enum():
    schema = json.loads((CHARTS / "colliderflow/values.schema.json").read_text())
    values = chart_values("colliderflow")
    values["storage"]["oci"]["auth"] = "password"
    with pytest.raises(jsonschema.ValidationError, match="password"):
        jsonschema.validate(values, schema)
    error = refused("colliderflow", {"storage": {"oci": {"auth": "password"}}})
    assert "/storage/oci/auth" in error, error


@pytest.mark.parametrize("chart", sorted(INSTALL_VALUES))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_kubernetes_validate(chart, version):
    docs = render(chart)
    assert docs
    for doc in docs:
        validate(doc, version)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE[chart]


@pytest.mark.parametrize("chart", sorted(INSTALL_VALUES))
def test_no_duplicate_objects(chart):
    docs = render(chart)
    ids = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids))


# --- colliderflow ------------------------------------------------------------------------------------


def test_service_accounts_and_bindings():
    docs = render("colliderflow")
    values = chart_values("colliderflow")["serviceAccounts"]
    accounts = by_kind(docs, "ServiceAccount")
    assert {values["sparkDriver"], values["training"]} <= set(accounts)
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    for binding in bindings.values():
        assert binding["roleRef"]["name"] in roles
    subjects = {s["name"] for b in bindings.values() for s in b["subjects"]}
    assert {values["sparkDriver"], values["training"], values["airflowWorker"]} <= subjects
    launcher = {(g, r): set(rule["verbs"]) for rule in roles["colliderflow-launcher"]["rules"]
                for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    # KubernetesJobOperator (training), its Service, KubernetesPodOperator, log streaming:
    assert {"create", "get", "list", "watch", "delete"} <= launcher[("batch", "jobs")]
    assert {"create", "delete"} <= launcher[("", "services")]
    assert {"create", "get", "list", "watch", "delete", "patch"} <= launcher[("", "pods")]
    assert "get" in launcher[("", "pods/log")]
    driver = roles["colliderflow-spark-driver"]["rules"][0]
    assert {"pods", "services", "configmaps"} <= set(driver["resources"])
    assert {"create", "delete", "watch"} <= set(driver["verbs"])


def test_job_namespace_moves_workload_objects_not_the_airflow_subject():
    docs = render("colliderflow", {"spark": {"jobNamespace": "physics"}}, namespace="airflow")
    for doc in docs:
        assert doc["metadata"]["namespace"] == "physics", doc["metadata"]["name"]
    launcher = by_kind(docs, "RoleBinding")["colliderflow-launcher"]
    assert launcher["subjects"] == [
        {"kind": "ServiceAccount", "name": "colliderflow-airflow-worker", "namespace": "airflow"}
    ]


SECRET_KEY = "wJalrXUtnFEMI-not-a-real-key"


def test_credentials_only_in_the_secret():
    values = {
        "storage": {
            **chart_values("colliderflow")["storage"],
            "s3": {"endpointUrl": "https://s3.cern.ch", "region": "us-east-1"},
            "credentials": {
                "existingSecret": "",
                "awsAccessKeyId": "AKIA-test",
                "awsSecretAccessKey": SECRET_KEY,
            },
        }
    }
    docs = render("colliderflow", values)
    for doc in docs:
        validate(doc)
    (secret,) = by_kind(docs, "Secret").values()
    assert base64.b64decode(secret["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == SECRET_KEY
    others = [d for d in docs if d["kind"] != "Secret"]
    assert SECRET_KEY not in yaml.safe_dump_all(others)
    config = by_kind(docs, "ConfigMap")["colliderflow-storage"]["data"]
    assert config["COLLIDERFLOW_S3_ENDPOINT"] == "https://s3.cern.ch"
    assert config["OCI_CONFIG_FILE"] == "/etc/colliderflow/storage/oci-config"


def test_existing_secret_renders_no_secret_and_missing_half_fails():
    storage = chart_values("colliderflow")["storage"]
    values = {"storage": {**storage, "credentials": {"existingSecret": "mine", "awsAccessKeyId": "AKIA"}}}
    assert not by_kind(render("colliderflow", values), "Secret")
    assert not by_kind(render("colliderflow"), "Secret")  # nothing to store: no empty Secret
    values = {"storage": {**storage, "credentials": {"existingSecret": "", "awsAccessKeyId": "AKIA"}}}
    assert "storage.credentials.awsSecretAccessKey is required" in refused("colliderflow", values)


def test_principal_auth_needs_no_config_file():
    storage = chart_values("colliderflow")["storage"]
    values = {"storage": {**storage, "oci": {"auth": "instance_principal", "profile": "DEFAULT"}}}
    config = by_kind(render("colliderflow", values), "ConfigMap")["colliderflow-storage"]["data"]
    assert config["COLLIDERFLOW_OCI_AUTH"] == "instance_principal" and "OCI_CONFIG_FILE" not in config


def test_storage_variables_are_the_ones_the_jobs_read():
    """Every COLLIDERFLOW_* setting the chart hands the pods is read by jobs/core/storage.py."""
    from jobs.core import storage

    config = by_kind(render("colliderflow"), "ConfigMap")["colliderflow-storage"]["data"]
    source = (ROOT / "jobs/core/storage.py").read_text()
    for key in config:
        if key.startswith("COLLIDERFLOW_") and key not in (
            "COLLIDERFLOW_STORAGE_ROOT",
            "COLLIDERFLOW_ALLOWED_ROOTS",
        ):
            assert key in source, key
    assert "COLLIDERFLOW_S3_ENDPOINT" in storage.S3_ENDPOINT_ENV


def test_allowed_roots_reach_airflow_as_the_list_it_reads():
    """storage.allowedRoots becomes COLLIDERFLOW_ALLOWED_ROOTS in the ConfigMap Airflow loads (extraEnvFrom),
    read back by colliderflow.data_roots as the same list; a root of an unsupported store is refused."""
    from colliderflow.data_roots import ENV, parse_roots

    storage = chart_values("colliderflow")["storage"]
    roots = ["root://eospublic.cern.ch//eos/opendata/cms", "s3://physics/cms"]
    config = by_kind(render("colliderflow", {"storage": {**storage, "allowedRoots": roots}}), "ConfigMap")
    assert parse_roots(config["colliderflow-storage"]["data"][ENV]) == roots
    assert ENV not in by_kind(render("colliderflow"), "ConfigMap")["colliderflow-storage"]["data"]
    assert "allowedRoots" in refused("colliderflow", {"storage": {**storage, "allowedRoots": ["http://h/x"]}})


def test_airflow_chart_values():
    """The official Airflow chart's values: our image (the tag the Dockerfile documents), Airflow
    3.3.2, an executor, DAGs baked in or git-synced, the worker service account bound by our RBAC."""
    values = yaml.safe_load((CHARTS / "colliderflow/airflow-values.yaml").read_text())
    dockerfile = (ROOT / "images/airflow/Dockerfile").read_text()
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    assert f"-t {image} " in dockerfile, f"{image} is not what images/airflow/Dockerfile builds"
    lock = (ROOT / "uv.lock").read_text()
    airflow = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock).group(1)
    assert values["airflowVersion"] == airflow
    assert values["executor"] in {
        "KubernetesExecutor",
        "CeleryExecutor",
        "LocalExecutor",
        "CeleryKubernetesExecutor",
    }
    assert values["dags"]["gitSync"]["enabled"] or "/opt/airflow/dags" in dockerfile
    assert values["dags"]["gitSync"]["subPath"] == "dags"
    worker_sa = chart_values("colliderflow")["serviceAccounts"]["airflowWorker"]
    assert values["workers"]["serviceAccount"]["name"] == worker_sa
    # The triggerer watches deferred Jobs/pods and reads their logs: the same, launcher-bound account.
    assert values["triggerer"]["serviceAccount"] == {"create": False, "name": worker_sa}
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["COLLIDERFLOW_BACKEND"] == "kubernetes"
    assert "SECRET" not in values.get("extraEnvFrom", "").upper()  # credentials stay out of Airflow
    assert yaml.safe_load(values["extraEnvFrom"])[0]["configMapRef"]["name"] == "colliderflow-storage"


# --- spark-dashboard ---------------------------------------------------------------------------------


def test_dashboards_shipped_verbatim_in_configmap():
    docs = render("spark-dashboard")
    data = by_kind(docs, "ConfigMap")["spark-dashboard-grafana-dashboards"]["data"]
    for name in ("spark.json", "pipeline.json"):
        assert json.loads(data[name]) == json.loads(
            (CHARTS / "spark-dashboard/dashboards" / name).read_text()
        )


def test_grafana_provisioning_points_at_prometheus():
    docs = render("spark-dashboard")
    provisioning = by_kind(docs, "ConfigMap")["spark-dashboard-grafana-provisioning"]["data"]
    (source,) = yaml.safe_load(provisioning["datasources.yaml"])["datasources"]
    services = by_kind(docs, "Service")
    prometheus = services["spark-dashboard-prometheus"]["spec"]["ports"][0]["port"]
    assert source["url"] == f"http://spark-dashboard-prometheus:{prometheus}"
    for name in ("spark", "pipeline"):
        dash = json.loads((CHARTS / f"spark-dashboard/dashboards/{name}.json").read_text())
        ds = next(v for v in dash["templating"]["list"] if v["type"] == "datasource")
        assert ds["current"]["value"] == source["uid"]
    mounts = by_kind(docs, "Deployment")["spark-dashboard-grafana"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    provider = yaml.safe_load(provisioning["dashboards.yaml"])["providers"][0]
    assert provider["options"]["path"] in {m["mountPath"] for m in mounts["volumeMounts"]}


def test_prometheus_scrapes_pushgateway_and_spark():
    docs = render("spark-dashboard")
    config = yaml.safe_load(
        by_kind(docs, "ConfigMap")["spark-dashboard-prometheus"]["data"]["prometheus.yml"]
    )
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    push = by_kind(docs, "Service")["spark-dashboard-pushgateway"]["spec"]["ports"][0]["port"]
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == [f"spark-dashboard-pushgateway:{push}"]
    assert jobs["pushgateway"]["honor_labels"] is True  # keep the pushed dag/run/stage labels
    assert jobs["spark-driver"]["metrics_path"] == "/metrics/prometheus"
    assert jobs["spark-executors"]["metrics_path"] == "/metrics/executors/prometheus"
    names = jobs["spark-driver"]["kubernetes_sd_configs"][0]["namespaces"]["names"]
    assert names == chart_values("spark-dashboard")["prometheus"]["sparkNamespaces"]
    spark_conf = (ROOT / "images/spark/Dockerfile").read_text()
    assert "/metrics/prometheus" in spark_conf and "spark.ui.prometheus.enabled true" in spark_conf


def test_grafana_password_required_or_existing_secret():
    assert "set grafana.adminPassword" in refused("spark-dashboard", {})
    docs = render(
        "spark-dashboard", {"grafana": {**chart_values("spark-dashboard")["grafana"], "existingSecret": "gf"}}
    )
    assert not by_kind(docs, "Secret")
    env = by_kind(docs, "Deployment")["spark-dashboard-grafana"]["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e} == {"gf"}


# --- dashboard queries use metric names that exist ---------------------------------------------------

PROMQL_WORDS = set(
    "sum max min avg count by without rate irate increase clamp_min clamp_max topk bottomk label_values "
    "on ignoring group_left histogram_quantile".split()
)


def queries(dashboard: dict) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return out


def metric_names(expr: str) -> tuple[set[str], list[str]]:
    """Metric names in a PromQL expression, and the __name__ regexes it selects with."""
    regexes = re.findall(r'__name__=~"([^"]+)"', expr)
    bare = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range selectors
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)  # grouping labels
    bare = re.sub(r",\s*[a-z_]+\s*\)", ")", bare)  # label_values(metric, label)
    bare = re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b", " ", bare)
    words = set(re.findall(r"[A-Za-z_:][\w:]*", bare)) - PROMQL_WORDS
    return words, regexes


def test_spark_dashboard_queries_use_real_spark_metric_names():
    sample = {
        line.split("{")[0].split()[0]
        for line in SPARK_METRICS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    dash = json.loads((CHARTS / "spark-dashboard/dashboards/spark.json").read_text())
    used: set[str] = set()
    for expr in queries(dash):
        names, regexes = metric_names(expr)
        assert names or regexes, expr
        missing = names - sample
        assert not missing, f"{expr}: {missing} not served by Spark 4.2.0"
        for rx in regexes:
            assert any(re.fullmatch(rx, n) for n in sample), f"{rx} matches no Spark metric"
        used |= names
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("active tasks", "cpu", "gc", "input", "shuffle"):
        assert topic in titles, f"the Spark dashboard has no {topic} panel"


def test_pipeline_dashboard_uses_the_pushed_metric_names():
    dash = json.loads((CHARTS / "spark-dashboard/dashboards/pipeline.json").read_text())
    used: set[str] = set()
    for expr in queries(dash):
        names, _ = metric_names(expr)
        assert names <= set(PIPELINE_METRICS), f"{expr}: unknown {names - set(PIPELINE_METRICS)}"
        used |= names
        for name in names:
            labels = set(re.findall(r"(\w+)=~?\"", expr))
            assert labels <= PIPELINE_METRICS[name], f"{expr}: labels {labels - PIPELINE_METRICS[name]}"
    assert used == set(PIPELINE_METRICS)
    legend = {
        m
        for p in dash["panels"]
        for t in p["targets"]
        for m in re.findall(r"{{(\w+)}}", t.get("legendFormat", ""))
    }
    assert legend <= set().union(*PIPELINE_METRICS.values())


def test_metric_names_documented_and_pushed():
    """docs/deployment.md lists each pipeline metric with its labels; jobs.metrics (when present) pushes
    exactly these names."""
    doc = (ROOT / "docs/deployment.md").read_text()
    for name, labels in PIPELINE_METRICS.items():
        assert f"{name}{{{','.join(sorted(labels, key=['dag', 'run', 'stage', 'class'].index))}}}" in doc, (
            name
        )
    modules = [*(ROOT / "jobs/metrics").glob("*.py"), *(ROOT / "jobs/core").glob("*.py")]
    source = "".join(p.read_text() for p in modules)
    for name in PIPELINE_METRICS:
        assert name in source or name.removeprefix("colliderflow_") in source, (
            f"jobs.metrics does not push {name}"
        )
