"""Shared fixtures: one real local Spark session for the whole run (a JVM start costs seconds),
the real CMS open-data files from scikit-hep-testdata, and the shared/ reference folder."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# py4j logs from __del__ at interpreter exit, after pytest has closed the captured stream
logging.getLogger("py4j").setLevel(logging.WARNING)
os.environ.setdefault("COLLIDERFLOW_SPARK_DRIVER_MEMORY", "2g")


@pytest.fixture(scope="session")
def spark():
    """A real local[2] SparkSession shared by every test that needs one."""
    from jobs.common.spark import spark_session

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
