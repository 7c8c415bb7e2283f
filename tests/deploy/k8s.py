"""The real Kubernetes tools for the deployment tests: helm (v4) and kubectl from tests/services/k8s-tools.sh
(pinned, checksummed, installed into .tools/bin), and one validator for every object a chart or the
Kubernetes backend renders: kubernetes-validate (strict) for built-in kinds, the spark-operator CRD's
openAPIV3Schema (../shared/schemas/) for SparkApplications."""

from __future__ import annotations

import functools
import os
import pathlib
import shlex
import subprocess

import jsonschema
import kubernetes_validate
import yaml

from tests.conftest import ROOT, SHARED

TOOLS = ROOT / ".tools" / "bin"
# The charts' kubeVersion floor and a current release (kubernetes-validate ships both schemas).
K8S_VERSIONS = ("1.29.0", "1.33.0")
SPARK_CRD = SHARED / "schemas" / "sparkoperator.k8s.io_sparkapplications.yaml"


@functools.cache
def tool(name: str) -> pathlib.Path:
    """Path of helm/kubectl, installed by the project's own script on first use (idempotent)."""
    if not (TOOLS / name).is_file():
        subprocess.run(["bash", str(ROOT / "tests/services/k8s-tools.sh")], check=True, capture_output=True)
    return TOOLS / name


def helm(*args: str, cwd: pathlib.Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("HELM_CACHE_HOME", str(ROOT / ".tools" / "helm-cache"))
    proc = subprocess.run(
        [str(tool("helm")), *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {shlex.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.cache
def spark_application_schema() -> dict:
    crd = yaml.safe_load(SPARK_CRD.read_text())
    (v1beta2,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    return v1beta2["schema"]["openAPIV3Schema"]


def validate(obj: dict, version: str = K8S_VERSIONS[-1]) -> None:
    """The schema the API server would apply to `obj`: the CRD's for a SparkApplication, else the
    official one for its apiVersion/kind (strict: unknown fields are errors)."""
    if obj.get("kind") == "SparkApplication":
        jsonschema.validate(obj, spark_application_schema())
    else:
        kubernetes_validate.validate(obj, version, strict=True)
