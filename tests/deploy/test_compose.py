"""docker-compose.yaml, checked statically (no Docker engine here): the services the stack needs, every
image pinned, health checks on long-running services, dependency conditions that can be met, no
host-port collisions, bind mounts and configs that exist, no storage secret written into the file."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from tests.deploy.test_images import PINNED, base_images

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def env(service: dict) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {k: str(v) for k, v in value.items()}


def test_the_stack_has_its_services():
    expected = {
        "postgres",
        "airflow-init",
        *AIRFLOW,
        "minio",
        "minio-init",
        "pushgateway",
        "prometheus",
        "grafana",
    }
    assert expected <= set(SERVICES)
    commands = {name: SERVICES[name]["command"] for name in AIRFLOW}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_image_pinned(name):
    image = SERVICES[name]["image"]
    assert not image.endswith(":latest") and PINNED.match(image), f"{name}: {image} is not pinned"


def test_airflow_image_is_ours_on_airflow_3_3_2():
    builds = {name: SERVICES[name].get("build") for name in ("airflow-init", *AIRFLOW)}
    for name, build in builds.items():
        assert build, f"{name} has no build section"
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        assert f"-t {SERVICES[name]['image']} " in dockerfile.read_text()
        assert "apache/airflow:3.3.2-python3.11" in base_images(dockerfile)


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if not one_shot(SERVICES[n])))
def test_long_running_services_have_health_checks(name):
    check = SERVICES[name].get("healthcheck")
    assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert SERVICES[name].get("restart") in {"unless-stopped", "always", "on-failure"}


def test_dependency_conditions_can_be_met():
    for name, service in SERVICES.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            elif condition == "service_completed_successfully":
                assert one_shot(SERVICES[dep]), f"{name} waits for {dep} to finish; it is long-running"
    for name in AIRFLOW:
        assert SERVICES[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def host_ports(service: dict) -> list[int]:
    out = []
    for port in service.get("ports") or []:
        spec = str(port["published"]) if isinstance(port, dict) else str(port)
        parts = spec.split(":")
        if isinstance(port, dict) or len(parts) >= 2:
            out.append(int((parts[-2] if len(parts) >= 2 else parts[0]).split("-")[0]))
    return out


def test_no_host_port_collisions():
    seen: dict[int, str] = {}
    for name, service in SERVICES.items():
        for port in host_ports(service):
            assert port not in seen, f"host port {port}: {seen[port]} and {name}"
            seen[port] = name
    assert {8080, 9000, 9090, 9091, 3000} <= set(seen)


def test_mounts_exist():
    volumes = set(COMPOSE.get("volumes") or {})
    configs = set(COMPOSE.get("configs") or {})
    for name, service in SERVICES.items():
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        for config in service.get("configs") or []:
            assert config["source"] in configs, f"{name}: config {config['source']} is not declared"
    mounts = {m.split(":")[1] for m in SERVICES["airflow-scheduler"]["volumes"]}
    assert {"/opt/airflow/dags", "/opt/airflow/plugins"} <= mounts


def test_bucket_created_at_start_is_the_storage_root():
    airflow_env = env(SERVICES["airflow-scheduler"])
    bucket = re.fullmatch(r"s3://([^/]+).*", airflow_env["COLLIDERFLOW_STORAGE_ROOT"]).group(1)
    script = "\n".join(SERVICES["minio-init"]["command"])
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    endpoint = airflow_env["COLLIDERFLOW_S3_ENDPOINT"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", endpoint).groups()
    assert host in SERVICES and f"{port}:{port}" in SERVICES[host]["ports"]


def test_storage_secret_not_written_into_the_file():
    """Secrets are interpolated from the environment/.env; the storage secret has no default at all."""
    for name, service in SERVICES.items():
        for key, value in env(service).items():
            if key in {"AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"}:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (
                    f"{name}: {key} must come from the environment"
                )


def test_monitoring_wired_like_the_chart():
    configs = COMPOSE["configs"]
    prometheus = yaml.safe_load(configs["prometheus-config"]["content"])
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]
    for job in ("spark-driver", "spark-executors"):  # local-mode Spark runs where LocalExecutor runs tasks
        (target,) = jobs[job]["static_configs"][0]["targets"]
        assert (
            target == "airflow-scheduler:4040"
            and env(SERVICES["airflow-scheduler"])["COLLIDERFLOW_BACKEND"] == "local"
        )
    assert "SPARK_CONF_DIR" in (ROOT / "images/airflow/Dockerfile").read_text()
    (source,) = yaml.safe_load(configs["grafana-datasources"]["content"])["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    provider = yaml.safe_load(configs["grafana-dashboards"]["content"])["providers"][0]
    mounts = dict(m.split(":")[:2] for m in SERVICES["grafana"]["volumes"] if m.startswith("."))
    assert mounts["./charts/spark-dashboard/dashboards"] == provider["options"]["path"]
    assert env(SERVICES["airflow-scheduler"])["COLLIDERFLOW_PUSHGATEWAY"] == "http://pushgateway:9091"
