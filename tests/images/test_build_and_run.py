"""Every image built from its Dockerfile and run: stand-in bases (tests/images/standins/) from Debian's
packages with mmdebstrap, the three images with buildah, then in each a stage run whose result must
equal the same run outside the image, its user, its work directory, its entrypoints and what it must
not contain. Slow (a first build downloads about 2 GB): `make images`, not in CI's default run."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import uproot

from tests.images import buildah

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

ROOT = buildah.ROOT
OUT = ROOT / "out" / "images"
UV_VERSION = next(
    line.split(":=")[1].strip()
    for line in (ROOT / "Makefile").read_text().splitlines()
    if line.startswith("UV_VERSION")
)
SPARK_VERSION = next(
    dep.split("==")[1]
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "spark"
    ]
    if dep.startswith("pyspark==")
)
STANDIN = "localhost/colliderflow-standin"
# Budgets for what each Dockerfile adds to its base (MB, uncompressed as `docker images` shows them;
# the stand-in bases differ from the official ones, the layers on top do not): the first build here
# (spark 1,910, tensorflow 3,335, airflow 1,302) plus about 15 %. docs/deployment.md says what is in them.
BUDGET_MB = {"spark": 2200, "tensorflow": 3800, "airflow": 1500}
BASES = {
    "spark": f"{STANDIN}/spark:{SPARK_VERSION}",
    "tensorflow": f"{STANDIN}/python:3.11",
    "airflow": f"{STANDIN}/airflow:3.11",
}


def image_tag(role: str) -> str:
    return f"localhost/colliderflow/{role}:test"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, dict]:
    """Build the stand-ins, then the three images; their sizes and build times go to out/images/."""
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "build.log"
    log.write_text("")
    start = time.monotonic()
    buildah.debian_base(log)
    uv = buildah.uv_standin(f"{STANDIN}/uv:{UV_VERSION}", UV_VERSION, log)
    standins = buildah.STANDINS
    buildah.build(standins / "python.Dockerfile", BASES["tensorflow"], standins, log)
    buildah.build(
        standins / "spark.Dockerfile", BASES["spark"], standins, log, {"SPARK_VERSION": SPARK_VERSION}
    )
    buildah.build(standins / "airflow.Dockerfile", BASES["airflow"], standins, log)
    built = {"standins_seconds": round(time.monotonic() - start, 1)}
    for role, base in BASES.items():
        began = time.monotonic()
        tag = buildah.build(
            ROOT / "images" / role / "Dockerfile",
            image_tag(role),
            ROOT,
            log,
            {"BASE_IMAGE": base, "UV_IMAGE": uv},
        )
        built[role] = {
            "image": tag,
            "build_seconds": round(time.monotonic() - began, 1),
            "size_mb": round(buildah.size_bytes(tag) / 1e6),
            "base_size_mb": round(buildah.size_bytes(base) / 1e6),
            "budget_mb": BUDGET_MB[role],
        }
        built[role]["added_mb"] = built[role]["size_mb"] - built[role]["base_size_mb"]
    (OUT / "images.json").write_text(json.dumps(built, indent=2) + "\n")
    print(json.dumps(built, indent=2))
    return built


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pathlib.Path:
    """A folder every image's user may write, mounted at /data: small generated samples."""
    base = tmp_path_factory.mktemp("image-data")
    base.chmod(0o777)
    host(
        ["-m", "jobs.generate", "nanoaod", "--events", "20000", "--files", "2", "--output", f"{base}/nanoaod"]
    )
    host(["-m", "jobs.generate", "delphes", "--events", "300", "--files", "1", "--output", f"{base}/delphes"])
    return base


def host(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def inside(role: str, command: list[str], data: pathlib.Path | None = None, **kwargs) -> str:
    """Run `command` in the role's image (as its own user); returns stdout, fails with stderr's tail."""
    volumes = {str(data): "/data"} if data else None
    proc = buildah.run(image_tag(role), command, volumes=volumes, **kwargs)
    assert proc.returncode == 0, f"{role}: {' '.join(command)} -> {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc.stdout


def delphes_inputs(root: str) -> list[str]:
    names = {"qcd": "qcd_lepFilter_13TeV", "ttbar": "ttbar_lepFilter_13TeV", "wjets": "Wlnu_lepFilter_13TeV"}
    return [arg for cls, name in names.items() for arg in ("--input", f"{cls}={root}/{name}")]


def histograms(folder: pathlib.Path) -> dict[str, np.ndarray]:
    with uproot.open(folder / "histograms.root") as f:
        return {name: f[name].values() for name in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi")}


@pytest.mark.parametrize("role", list(BASES))
def test_user_work_directory_and_size(images, role):
    """The image runs as its numeric non-root user, which can write its work directory; what it adds
    to its base is within its budget."""
    config = buildah.config(image_tag(role))
    user = config["User"].split(":")[0]
    assert user.isdigit() and user != "0", config["User"]
    out = inside(role, ["sh", "-c", 'id -u; touch "$PWD/.written" && rm "$PWD/.written" && echo "$PWD"'])
    uid, workdir = out.split()
    assert uid == user and workdir == config["WorkingDir"]
    found = images[role]
    assert 0 < found["added_mb"] <= found["budget_mb"], found


@pytest.mark.parametrize("role", ["spark", "tensorflow"])
def test_every_named_entrypoint_starts(images, role):
    modules = buildah.config(image_tag(role))["Labels"]["io.colliderflow.entrypoints"].split()
    assert modules
    script = " && ".join(f"python -m {m} --help > /dev/null" for m in modules)
    inside(role, ["sh", "-c", script])


ABSENT = {  # what each role must not contain: (python modules, commands)
    "spark": (["tensorflow", "tf_keras", "airflow"], []),
    "tensorflow": (["pyspark", "airflow"], ["java", "spark-submit"]),
    "airflow": (["tensorflow", "tf_keras"], ["java"]),
}


@pytest.mark.parametrize("role", list(ABSENT))
def test_nothing_the_role_does_not_need(images, role):
    modules, commands = ABSENT[role]
    code = f"import importlib.util as u; print([m for m in {modules!r} if u.find_spec(m)])"
    assert inside(role, ["python", "-c", code]).strip() == "[]"
    for command in commands:
        assert inside(role, ["sh", "-c", f"command -v {command} || true"]).strip() == "", command


def test_spark_image_runs_dimuon_like_the_host(images, data):
    """jobs.dimuon on Spark in local mode inside the image equals the same run outside it."""
    common = ["--master", "local[1]", "--engine", "spark", "--no-plot"]
    host(["-m", "jobs.dimuon", "--input", f"{data}/nanoaod", "--output", f"{data}/dimuon-host", *common])
    image_run = ["python", "-m", "jobs.dimuon", "--input", "/data/nanoaod", "--output", "/data/dimuon-image"]
    inside("spark", [*image_run, *common], data)
    ours, theirs = histograms(data / "dimuon-host"), histograms(data / "dimuon-image")
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert ours["dimuon_mass"].sum() > 0
    cutflow = [json.loads((data / d / "cutflow.json").read_text()) for d in ("dimuon-host", "dimuon-image")]
    assert cutflow[0] == cutflow[1]


def test_spark_image_submits_and_ingests(images, data):
    """spark-submit answers with the locked version; jobs.ingest turns a Delphes sample into features
    whose cut-flow equals a run outside the image."""
    proc = buildah.run(image_tag("spark"), ["spark-submit", "--version"])
    banner = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"version {SPARK_VERSION}" in banner, banner[-2000:]
    host(["-m", "jobs.ingest", *delphes_inputs(f"{data}/delphes"), "--output", f"{data}/features-host"])
    image_run = [
        "python",
        "-m",
        "jobs.ingest",
        *delphes_inputs("/data/delphes"),
        "--output",
        "/data/features-image",
    ]
    inside("spark", image_run, data)
    classes = [
        json.loads((data / d / "_summary.json").read_text())["classes"]
        for d in ("features-host", "features-image")
    ]
    assert classes[0] == classes[1] and all(c["events_written"] > 0 for c in classes[0].values())


def test_tensorflow_image_runs_the_dl_trigger_tail(images, data):
    """What runs in the TensorFlow image on Kubernetes, inside it: a demo sample (jobs.generate), one
    epoch of jobs.train on tiny TFRecords made outside, jobs.evaluate on its model, then the run report
    (jobs.metrics) over the run's folders."""
    run, inner = data / "tf-run", "/data/tf-run"
    host(["-m", "jobs.ingest", *delphes_inputs(f"{data}/delphes"), "--output", f"{run}/features"])
    host(["-m", "jobs.prepare", "--input", f"{run}/features", "--output", f"{run}/prepared"])
    host(["-m", "jobs.tfrecords", "--input", f"{run}/prepared", "--output", f"{run}/tfrecords"])
    run.chmod(0o777)
    sets = ["--test", f"{inner}/tfrecords/test"]
    model = ["--model", f"{inner}/model/model.keras", "--history", f"{inner}/model/history.json"]
    commands = [
        ["jobs.generate", "delphes", "--events", "50", "--output", f"{inner}/samples"],
        [
            "jobs.train",
            "--train",
            f"{inner}/tfrecords/train",
            *sets,
            "--output",
            f"{inner}/model",
            "--epochs",
            "1",
        ],
        ["jobs.evaluate", *model, *sets, "--output", f"{inner}/evaluation"],
        ["jobs.metrics", "--run-dir", inner, "--dag-id", "dl_trigger", "--run-id", "image-smoke"],
    ]
    for command in commands:
        inside("tensorflow", ["python", "-m", *command], data)
    metrics = json.loads((run / "evaluation" / "_metrics.json").read_text())
    assert metrics and (run / "evaluation" / "roc.png").exists(), metrics
    assert (run / "report" / "report.html").stat().st_size > 0
    assert len(list((run / "samples").rglob("*.root"))) == 3


def test_airflow_image_parses_both_dags_and_loads_the_plugin(images):
    script = (
        "airflow db migrate > /dev/null && airflow dags reserialize > /dev/null"
        " && echo '=== errors' && airflow dags list-import-errors -o json"
        " && echo '=== dags' && airflow dags list -o json"
        " && echo '=== plugins' && airflow plugins -o json"
        " && echo '=== templates' && python -c 'from colliderflow import results_app as r;"
        " print(sorted(r._env.list_templates()))'"
    )
    out = inside("airflow", ["bash", "-c", script])
    # each section's answer is its last line (the CLI logs warnings to stdout before it)
    sections = {
        name: text.strip().splitlines()[-1]
        for name, text in (p.split("\n", 1) for p in out.split("=== ")[1:])
    }
    assert sections["errors"] in ("[]", "No data found"), out
    dags = {d["dag_id"] for d in json.loads(sections["dags"])}
    assert {"cms_dimuon", "dl_trigger"} <= dags, dags
    plugins = json.loads(sections["plugins"])
    assert any(p["name"] == "colliderflow" for p in plugins), plugins
    # the results views render from the installed package's templates (the wheel must carry them)
    assert sections["templates"] == str(
        sorted(p.name for p in (ROOT / "plugins/colliderflow/templates").iterdir())
    )
