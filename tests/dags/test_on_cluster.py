"""Both DAGs end to end through Airflow in a cluster-shaped world: Spark standalone with two workers,
each in its own mount namespace (bench/fixtures/cluster.py); the `airflow dags test` process, and so every
stage driver and training worker it starts, in a private namespace too; every input and output on S3
(moto). No process shares a local disk with another, so what passes here cannot work by accident
through one. Outputs equal a local run of the same events."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from bench.fixtures.cluster import isolated, isolated_env
from colliderflow.data_roots import ENV as ALLOWED_ROOTS_ENV
from jobs.core import storage
from jobs.dltrigger_schema import ENTRY_COLUMN, SOURCE_FILE_COLUMN
from tests.conftest import ROOT, SECRET
from tests.dags.conftest import DL_TRIGGER_E2E_CONF

# a dl_trigger run takes minutes locally (the shared reference run) and again on the cluster
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]


def dags_test_on_cluster(airflow_env: dict, s3_env: dict, dag_id: str, conf: dict, timeout: int = 1800):
    """`airflow dags test` in its own namespace; only the Airflow home stays visible (its SQLite DB)."""
    env = isolated_env({**airflow_env, **s3_env}, keep=[airflow_env["AIRFLOW_HOME"]])
    bucket = conf["output_root"].split("/")[2]  # the test's bucket: an operator's allowed root
    env[ALLOWED_ROOTS_ENV] = json.dumps([*json.loads(env[ALLOWED_ROOTS_ENV]), f"s3://{bucket}"])
    cmd = isolated([os.path.join(os.path.dirname(sys.executable), "airflow"), "dags", "test", dag_id])
    cmd += ["-c", json.dumps(conf)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def download_run(bucket: str, dag_id: str, dest: pathlib.Path) -> pathlib.Path:
    """The single run directory of `dag_id` under s3://bucket/runs, copied to `dest` for comparison."""
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    (run,) = [
        p for p in fs.ls(f"{bucket}/runs/{dag_id}", detail=False) if p.rsplit("/", 1)[-1] not in NOT_RUNS
    ]
    fs.get(run, str(dest), recursive=True)
    return dest


NOT_RUNS = ("partitions", "cumulative")  # beside the run directories: the partition log, the sum so far


def histograms(path: pathlib.Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {name.split(";")[0]: f[name].values(flow=True) for name in f.keys(cycle=False)}


def rows(directory: pathlib.Path) -> pa.Table:
    """Every Parquet part below `directory`, with the source file reduced to its name (the same events
    live under a local path in one run and an s3:// URL in the other), in a canonical row order."""
    parts = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    assert parts, f"no Parquet part below {directory}"
    table = pa.concat_tables(pq.read_table(p, partitioning=None) for p in parts)
    names = [str(s).rsplit("/", 1)[-1] for s in table.column(SOURCE_FILE_COLUMN).to_pylist()]
    index = table.schema.get_field_index(SOURCE_FILE_COLUMN)
    table = table.set_column(index, SOURCE_FILE_COLUMN, pa.array(names))
    return table.sort_by([(SOURCE_FILE_COLUMN, "ascending"), (ENTRY_COLUMN, "ascending")])


def assert_no_secret(directory: pathlib.Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the S3 secret leaked into {path}"


def test_cms_dimuon_on_the_cluster_equals_local(airflow_env, spark_cluster, s3_env, bucket, tmp_path):
    from jobs.generate import nanoaod

    sample = tmp_path / "nanoaod"
    nanoaod.generate(events=40_000, output=str(sample), files=6, seed=5)  # 6 tasks: treeReduce shuffles
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(f"{sample}/", f"{bucket}/samples/nanoaod/", recursive=True)
    local = tmp_path / "local"
    cmd = [sys.executable, "-m", "jobs.dimuon", "--input", f"{sample}/*.root", "--output", str(local)]
    cmd += ["--master", "local[2]"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    conf = {
        "input": [f"s3://{bucket}/samples/nanoaod/*.root"],
        "output_root": f"s3://{bucket}/runs",
        "spark_master": spark_cluster.master_url,
    }
    proc = dags_test_on_cluster(airflow_env, s3_env, "cms_dimuon", conf)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:] + spark_cluster.logs()
    run = download_run(bucket, "cms_dimuon", tmp_path / "cluster")
    assert (run / "dimuon" / "_SUCCESS").exists()
    ours, theirs = histograms(run / "dimuon" / "histograms.root"), histograms(local / "histograms.root")
    assert ours.keys() == theirs.keys() and ours
    for name, values in theirs.items():
        np.testing.assert_array_equal(ours[name], values, err_msg=name)
    cutflow = json.loads((run / "dimuon" / "cutflow.json").read_text())
    assert cutflow["cuts"] == json.loads((local / "cutflow.json").read_text())["cuts"]
    assert any((run / "spark-events").rglob("*")), "the Spark event log did not reach the run directory"
    assert_no_secret(run)
    # the partition log and the cumulative result on S3: one partition, its sum equal to the local run
    fs.get(f"{bucket}/runs/cms_dimuon/cumulative", str(tmp_path / "cumulative"), recursive=True)
    summed = histograms(tmp_path / "cumulative" / "histograms.root")
    for name, values in theirs.items():
        np.testing.assert_array_equal(summed[name], values, err_msg=name)
    assert len(fs.ls(f"{bucket}/runs/cms_dimuon/partitions/log")) == 2  # the claim and its result


def test_dl_trigger_on_the_cluster_equals_local(
    airflow_env, dl_trigger_local_run, spark_cluster, s3_env, bucket, tmp_path
):
    master = spark_cluster.master_url
    conf = {**DL_TRIGGER_E2E_CONF, "output_root": f"s3://{bucket}/runs", "spark_master": master}
    proc = dags_test_on_cluster(airflow_env, s3_env, "dl_trigger", conf)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:] + spark_cluster.logs()
    run, local = download_run(bucket, "dl_trigger", tmp_path / "cluster"), dl_trigger_local_run
    for stage in ("features", "prepared", "tfrecords", "evaluation", "report"):
        assert (run / stage / "_SUCCESS").exists(), stage
    # the same generated events give the same features, and the same split, balance and scaling
    assert rows(run / "features").equals(rows(local / "features"))
    for split in ("train", "test"):
        assert rows(run / "prepared" / split).equals(rows(local / "prepared" / split)), split
    ours = json.loads((run / "evaluation" / "_metrics.json").read_text())["auc"]
    theirs = json.loads((local / "evaluation" / "_metrics.json").read_text())["auc"]
    assert ours.keys() == theirs.keys()
    for name, auc in theirs.items():
        assert abs(ours[name] - auc) < 0.03, (name, ours, theirs)
    assert any((run / "spark-events").rglob("*")), "the Spark event log did not reach the run directory"
    assert_no_secret(run)
