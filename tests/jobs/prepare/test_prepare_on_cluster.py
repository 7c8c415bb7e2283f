"""THE test of issue 11 for prepare and tfrecords: both stages on s3:// in and out with
`--master spark://...` on the cluster fixture (bench/fixtures/cluster.py: two workers and the driver, each in
its own mount namespace with a private /tmp, so no process can see another's local files), equal to a
local run: the prepared sets row for row in the same shuffled order, the TFRecord shards byte for
byte. Before, prepare failed here (`No FileSystem for scheme "s3"`, and output staged in a
driver-local directory that executors cannot see). The events on the store were ingested from another
location (every `source_file` URL differs), so the equality also shows that the split does not depend
on where the data lives; the moto server's request log shows every output byte uploaded once."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from bench.fixtures.cluster import run_driver
from bench.fixtures.ingested import write_ingested
from jobs.core import storage
from jobs.prepare import job as prepare
from jobs.tfrecords import job as tfrecords
from tests.jobs.prepare.test_prepare import read_split
from tests.jobs.prepare.test_prepare_s3 import ELSEWHERE, download, identities, object_sizes, relocate
from tests.s3_recording import copies, recorded_requests, uploaded_bytes

# tests/dags/test_on_cluster.py runs prepare and tfrecords on the cluster in CI (features and prepared
# sets row for row); this one adds the upload accounting on the cluster
pytestmark = [pytest.mark.slow, pytest.mark.deep]

COUNTS = {0: 20, 1: 31, 2: 24}


def test_prepare_and_tfrecords_on_the_cluster_equal_local(spark, spark_cluster, s3_env, bucket, tmp_path):
    local = tmp_path / "local"
    write_ingested(str(local / "features"), COUNTS, seed=8, events_per_file=7)
    prepare.run(str(local / "features"), str(local / "prepared"), spark=spark, shuffle_partitions=3)
    tfrecords.run(str(local / "prepared"), str(local / "tfr"), spark=spark)

    relocate(local / "features", tmp_path / "moved")
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(str(tmp_path / "moved") + "/", f"{bucket}/run-1/features/", recursive=True)
    root = f"s3://{bucket}/run-1"
    # (bench/fixtures/cluster_conf/spark-defaults.conf: shuffle blocks fetched over the network, as
    # across nodes)
    master = ["--master", spark_cluster.master_url]
    with recorded_requests(tmp_path) as requests:
        for args in (
            ["jobs.prepare", "--input", f"{root}/features", "--output", f"{root}/prepared",
             "--shuffle-partitions", "3", *master],
            ["jobs.tfrecords", "--input", f"{root}/prepared", "--output", f"{root}/tfr", *master],
        ):  # fmt: skip
            done = run_driver(args, env=s3_env, timeout=600)
            assert done.returncode == 0, done.stderr[-4000:] + spark_cluster.logs()

    assert not copies(requests)
    for out in ("prepared", "tfr"):
        assert uploaded_bytes(requests, f"{bucket}/run-1/{out}/") == object_sizes(bucket, f"run-1/{out}/") > 0

    remote = download(f"{root}/prepared", tmp_path / "cluster-prepared")
    for split in ("train", "test"):
        a, b = read_split(str(local / "prepared"), split), read_split(remote, split)
        assert a["ids"] and all(s.startswith(ELSEWHERE) for s, _ in b["ids"])
        assert identities(a) == identities(b)
        for key in ("hlf", "gru", "label", "n"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split}/{key}")
    shards = pathlib.Path(download(f"{root}/tfr", tmp_path / "cluster-tfr"))
    for split in ("train", "test"):
        names = sorted(os.listdir(local / "tfr" / split))
        assert names and names == sorted(os.listdir(shards / split))
        for name in names:
            assert (local / "tfr" / split / name).read_bytes() == (shards / split / name).read_bytes()
    assert (shards / "_SUCCESS").exists() and (pathlib.Path(remote) / "_SUCCESS").exists()
