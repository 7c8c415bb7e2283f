"""Shared fixtures: one real local Spark session for the whole run (a JVM start costs seconds),
the real CMS open-data files from scikit-hep-testdata, the shared/ reference folder, and a real S3
endpoint (moto's server on loopback) with a fresh bucket per test."""

from __future__ import annotations

import atexit
import json
import logging
import os
import pathlib
import secrets
import shutil
import tempfile

import pytest

from tests.xrootd import xrootd_server  # noqa: F401 - session fixture: an XRootD server on loopback

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SECRET = "cf-" + secrets.token_hex(16)  # a distinctive S3 secret key, grepped for in every output and log

# Hermetic: no test reads or writes the user's .airflow/ or out/. `make` exports AIRFLOW_HOME=<repo>/.airflow
# (importing Airflow creates its logs/ there), and the DAGs' default inputs and output root derive from
# COLLIDERFLOW_DATA (else <repo>/out/demo): a run the scheduler creates on its own, with the defaults,
# lands below it. Both point into a scratch directory of this session, before anything imports Airflow.
SCRATCH = tempfile.mkdtemp(prefix="colliderflow-tests-")
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = os.path.join(SCRATCH, "airflow-home")
os.environ["COLLIDERFLOW_DATA"] = os.path.join(SCRATCH, "data")
os.environ.pop("COLLIDERFLOW_STORAGE_ROOT", None)  # it would win over COLLIDERFLOW_DATA (dagkit.data_root)

# TensorFlow's log level is left to the stages (jobs/core/tf_env.py), as in a deployment: the DAG tests
# check that successful task logs hold no ERROR line.
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
# py4j logs from __del__ at interpreter exit, after pytest has closed the captured stream
logging.getLogger("py4j").setLevel(logging.WARNING)
os.environ.setdefault("COLLIDERFLOW_SPARK_DRIVER_MEMORY", "2g")
# `make airflow`'s launcher escalates SIGINT, SIGINT, SIGTERM, SIGKILL 20 s apart (docs/airflow.md); the
# Airflow 3.3 scheduler and dag-processor outlive the first three, so each stop of a test's standalone
# took a minute. The escalation is the same, sooner.
os.environ.setdefault("COLLIDERFLOW_SHUTDOWN_GRACE_S", "5")


@pytest.fixture(scope="session", autouse=True)
def allowed_roots(tmp_path_factory) -> list[str]:
    """The tests' allowed data roots, as an operator would name them (colliderflow.data_roots): every
    temporary directory of this session and the scratch directory, before any fixture builds an
    Airflow environment from os.environ."""
    roots = [str(tmp_path_factory.getbasetemp()), SCRATCH]
    os.environ["COLLIDERFLOW_ALLOWED_ROOTS"] = json.dumps(roots)
    return roots


@pytest.fixture(scope="session")
def spark():
    """A real local[2] SparkSession shared by every test that needs one."""
    from jobs.core.spark import spark_session

    session = spark_session(
        "colliderflow-tests", master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def testdata():
    """Path lookup for the real ROOT files shipped by scikit-hep-testdata 0.3.12."""
    import skhep_testdata

    return skhep_testdata.data_path


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the shared/ folder sits beside the repository in CI)")
    return SHARED


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port for this module."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """Credentials and endpoint the way a pod gets them (env from a Secret and a ConfigMap)."""
    env = {
        "AWS_ACCESS_KEY_ID": "colliderflow-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "COLLIDERFLOW_S3_ENDPOINT": s3_server,
    }
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(s3_env, request) -> str:
    """A fresh bucket per test (s3fs instances are cached per endpoint, so listings are invalidated)."""
    name = "cf-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    from jobs.core import storage

    fs, _ = storage.filesystem(f"s3://{name}")
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)
    fs.invalidate_cache()


@pytest.fixture(scope="session")
def spark_cluster():
    """A Spark standalone master and two workers on loopback, each worker in a private mount namespace
    (own tmpfs /tmp): see bench/fixtures/cluster.py. Drivers go through
    `bench.fixtures.cluster.run_driver`."""
    from bench.fixtures import cluster

    reason = cluster.cluster_unavailable()
    if reason:
        pytest.skip(reason)
    with cluster.spark_cluster() as running:
        yield running
