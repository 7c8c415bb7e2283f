"""Spark sessions need no Hadoop connector: an event log aimed at an object store is written locally
by the driver and copied there through fsspec when the driver exits."""

from __future__ import annotations

import os
import subprocess
import sys

from jobs.core import storage
from jobs.metrics.eventlog import find_event_logs, summarize_application
from tests.conftest import ROOT, SECRET

DRIVER = """
import sys
from jobs.core.spark import spark_session
spark = spark_session("event-log-probe", "local[1]", event_log_dir=sys.argv[1])
assert spark.range(1000).count() == 1000
spark.stop()
"""


def test_event_log_on_s3_without_hadoop_connector(bucket):
    url = f"s3://{bucket}/run/spark-events"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, url], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: Spark event log not copied" not in done.stderr
    storage.filesystem(url)[0].invalidate_cache()
    (app,) = find_event_logs(url)  # one application, as jobs.metrics finds it
    summary = summarize_application(app)
    assert summary.app_id.startswith("local-") and summary.complete and summary.jobs >= 1, summary


def test_executors_of_a_cluster_get_the_storage_settings(s3_env, monkeypatch):
    from jobs.core.spark import storage_env

    monkeypatch.setenv("COLLIDERFLOW_UNRELATED", "x")
    forwarded = storage_env()
    assert forwarded["COLLIDERFLOW_S3_ENDPOINT"] == s3_env["COLLIDERFLOW_S3_ENDPOINT"]
    assert forwarded["AWS_SECRET_ACCESS_KEY"] == SECRET and "COLLIDERFLOW_UNRELATED" not in forwarded
