"""Static checks of the container images (no Docker engine here): pinned bases, a non-root final
user, the project installed from uv.lock, and every stage entrypoint an image names exists in jobs/."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("images/*/Dockerfile*"))
ROLES = {"spark", "tensorflow", "airflow"}
# An image reference pinned to an exact version: registry/name:tag with a digit in the tag, or a digest.
PINNED = re.compile(
    r"^[\w.\-/:]+:(?=[^:]*\d)[\w.\-]+(@sha256:[0-9a-f]{64})?$|^[\w.\-/:]+@sha256:[0-9a-f]{64}$"
)
LOCK_INSTALL = re.compile(r"uv sync[^\n]*--locked|uv export[^\n]*--locked|uv sync[^\n]*--frozen")


def instructions(path: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def base_images(path: pathlib.Path) -> list[str]:
    """External FROM images with build ARG defaults substituted; stage aliases are skipped."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key.strip(), value.strip())
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            if image not in stages:
                images.append(image)
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    return images


def entrypoints(path: pathlib.Path) -> set[str]:
    text = path.read_text()
    found = set(re.findall(r"\bjobs\.[a-z_][a-z0-9_]*\b", text))
    return {m for m in found if m != "jobs.common" and not m.startswith("jobs.common.")}


def test_one_dockerfile_per_role():
    roles = {p.parent.name for p in DOCKERFILES}
    assert ROLES <= roles, f"missing image roles: {ROLES - roles}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_base_images_pinned(dockerfile: pathlib.Path):
    images = base_images(dockerfile)
    assert images, "no FROM"
    for image in images:
        assert "$" not in image, f"{image}: unresolved build arg in FROM"
        assert not image.endswith(":latest") and PINNED.match(image), f"{image} is not pinned to an exact tag"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_final_user_not_root(dockerfile: pathlib.Path):
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"final USER is {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_project_installed_from_lock(dockerfile: pathlib.Path):
    runs = " ".join(rest for word, rest in instructions(dockerfile) if word == "RUN")
    copies = " ".join(rest for word, rest in instructions(dockerfile) if word == "COPY")
    assert "uv.lock" in copies, "uv.lock is not copied into the image"
    assert LOCK_INSTALL.search(runs), "dependencies are not installed from the lock (uv sync/export --locked)"
    allowed = r"pip install(?![^&;]*(-r /tmp/requirements|--no-deps|tensorflow\[and-cuda\]==\$))"
    assert not re.search(allowed, runs), "a pip install outside the locked set"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_entrypoint_modules_exist(dockerfile: pathlib.Path):
    modules = entrypoints(dockerfile)
    assert modules, "the image names no stage entrypoint (LABEL io.colliderflow.entrypoints)"
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, f"entrypoint module(s) not in jobs/: {missing}"


def test_spark_image_matches_locked_pyspark():
    """The Spark runtime in the image must be the pyspark version the jobs are locked to."""
    lock = (ROOT / "uv.lock").read_text()
    pyspark = re.search(r'name = "pyspark"\nversion = "([^"]+)"', lock).group(1)
    (image,) = [i for i in base_images(ROOT / "images/spark/Dockerfile") if i.startswith("apache/spark:")]
    assert image.split(":")[1].startswith(pyspark + "-"), f"{image} vs locked pyspark {pyspark}"


def test_airflow_image_matches_locked_airflow():
    lock = (ROOT / "uv.lock").read_text()
    airflow = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock).group(1)
    (image,) = [i for i in base_images(ROOT / "images/airflow/Dockerfile") if i.startswith("apache/airflow:")]
    assert image.split(":")[1].startswith(airflow), f"{image} vs locked apache-airflow {airflow}"
    text = (ROOT / "images/airflow/Dockerfile").read_text()
    assert "/opt/airflow/dags" in text and "/opt/airflow/plugins" in text, "DAGs and plugins are not baked in"


def test_spark_image_has_object_store_connectors():
    text = (ROOT / "images/spark/Dockerfile").read_text()
    for needle in ("hadoop-aws", "awssdk/bundle", "oci-hdfs", "sha1sum -c"):
        assert needle in text, f"spark image lacks {needle}"
    hadoop = re.search(r"ARG HADOOP_VERSION=(\S+)", text).group(1)
    jars = ROOT / ".venv/lib/python3.11/site-packages/pyspark/jars"
    if jars.is_dir():
        assert (jars / f"hadoop-client-api-{hadoop}.jar").exists(), (
            f"hadoop-aws {hadoop} does not match the Hadoop bundled with the locked pyspark"
        )


def test_gpu_variant_keeps_locked_tensorflow_version():
    text = (ROOT / "images/tensorflow/Dockerfile").read_text()
    assert "ARG TF_VARIANT=cpu" in text
    assert "tensorflow[and-cuda]==$tfv" in text and "tensorflow-cpu==" in text
