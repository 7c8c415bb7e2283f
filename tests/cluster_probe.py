"""Driver run by tests/test_cluster.py inside its own namespace: writes a file in its /tmp, asks every
executor what it sees in its /tmp, and prints the findings as one JSON line."""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import uuid

from jobs.core.spark import spark_session


def _look(driver_file: str) -> tuple[bool, str, list[str]]:
    """What one task sees: the driver's file? which executor markers? (one marker per executor)"""
    with open(f"/tmp/cf-marker-{os.getppid()}", "w") as marker:
        marker.write("executor")
    time.sleep(1)  # both executors hold a task at once
    return os.path.exists(driver_file), str(os.getppid()), sorted(glob.glob("/tmp/cf-marker-*"))


if __name__ == "__main__":
    driver_file = f"/tmp/cf-driver-{uuid.uuid4().hex}"
    with open(driver_file, "w") as f:
        f.write("driver")
    spark = spark_session("cluster-probe", master=sys.argv[1])
    rows = spark.sparkContext.parallelize([driver_file] * 8, 8).map(_look).collect()
    spark.stop()
    executors: dict[str, set[str]] = {}
    for _, executor, markers in rows:
        executors.setdefault(executor, set()).update(markers)
    print(
        json.dumps(
            {
                "driver_file_seen_by_executors": sorted({seen for seen, _, _ in rows}),
                "executor_tmp_markers": {k: sorted(v) for k, v in executors.items()},
                "driver_sees_executor_markers": bool(glob.glob("/tmp/cf-marker-*")),
            }
        )
    )
