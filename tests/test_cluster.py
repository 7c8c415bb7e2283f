"""The cluster fixture itself: executors must not see the driver's local files nor each other's."""

from __future__ import annotations

import json

from bench.fixtures.cluster import run_driver

PROBE = "tests.cluster_probe"


def test_executors_share_no_disk_with_the_driver_or_each_other(spark_cluster):
    done = run_driver([PROBE, spark_cluster.master_url], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + spark_cluster.logs()
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["driver_file_seen_by_executors"] == [False]
    assert len(seen["executor_tmp_markers"]) == 2, seen  # two executors, each sees only its own marker
    assert all(len(markers) == 1 for markers in seen["executor_tmp_markers"].values()), seen
    assert seen["driver_sees_executor_markers"] is False
