"""jobs.prepare and jobs.tfrecords with s3:// in and out (moto's S3 server on loopback; the Spark
Python workers get only the endpoint and credentials, from their environment, as executors on other
nodes would), against the same jobs on local files:

- the same events, ingested from another location (every `source_file` URL differs) and stored in a
  bucket instead of a local directory, give the same prepared sets row for row, in the same shuffled
  order (the decisions hash the event's identity, not where it lives), and the same TFRecord shards
  byte for byte;
- every output byte crosses to the store once: the bytes uploaded under each output prefix (the moto
  server's own request log, Spark workers' requests included) equal the final objects' size, and no
  server-side copy is made;
- an input without _SUCCESS is refused in one line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.fixtures.ingested import write_ingested
from jobs.core import storage
from jobs.prepare import job as prepare
from jobs.tfrecords import job as tfrecords
from tests.conftest import ROOT
from tests.core.test_storage import executor_env
from tests.jobs.prepare.test_prepare import read_split
from tests.s3_recording import copies, recorded_requests, uploaded_bytes

COUNTS = {0: 14, 1: 23, 2: 17}
ELSEWHERE = "root://eospublic.cern.ch//eos/opendata/dltrigger/v2"


def relocate(src: pathlib.Path, dst: pathlib.Path) -> None:
    """The same ingestion output as if the ROOT files had been read from ELSEWHERE: every
    `source_file` URL replaced, file names and entries kept."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix != ".parquet":
            target.write_bytes(path.read_bytes())
            continue
        table = pq.read_table(path)
        moved = pc.replace_substring(table["source_file"], "synthetic://", f"{ELSEWHERE}/")
        column = table.schema.get_field_index("source_file")
        pq.write_table(table.set_column(column, "source_file", moved), target)


def download(url: str, dest: pathlib.Path) -> str:
    fs, path = storage.filesystem(url)
    fs.invalidate_cache()
    fs.get(path.rstrip("/") + "/", str(dest) + "/", recursive=True)
    return str(dest)


def object_sizes(bucket: str, prefix: str) -> int:
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    return sum(info["size"] for info in fs.find(f"{bucket}/{prefix}", detail=True).values())


def identities(split: dict) -> list[tuple[str, int]]:
    return [(s.rsplit("/", 1)[-1], e) for s, e in split["ids"]]


@pytest.mark.slow
def test_prepare_and_tfrecords_on_s3_equal_a_local_run(spark, bucket, s3_env, tmp_path):
    local_in = tmp_path / "local" / "features"
    write_ingested(str(local_in), COUNTS, seed=5, events_per_file=6)
    relocate(local_in, tmp_path / "moved")
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(str(tmp_path / "moved") + "/", f"{bucket}/run-7/features/", recursive=True)

    prepare.run(str(local_in), str(tmp_path / "local" / "prepared"), spark=spark, shuffle_partitions=2)
    tfrecords.run(str(tmp_path / "local" / "prepared"), str(tmp_path / "local" / "tfr"), spark=spark)

    s3_root = f"s3://{bucket}/run-7"
    with executor_env(spark, s3_env), recorded_requests(tmp_path) as requests:
        prepare.run(f"{s3_root}/features", f"{s3_root}/prepared", spark=spark, shuffle_partitions=2)
        tfrecords.run(f"{s3_root}/prepared", f"{s3_root}/tfr", spark=spark)

    assert not copies(requests)
    for out in ("prepared", "tfr"):
        written = uploaded_bytes(requests, f"{bucket}/run-7/{out}/")
        assert written == object_sizes(bucket, f"run-7/{out}/") > 0, out

    remote = download(f"{s3_root}/prepared", tmp_path / "remote-prepared")
    for split in ("train", "test"):
        a, b = read_split(str(tmp_path / "local" / "prepared"), split), read_split(remote, split)
        assert a["ids"] and all(s.startswith("synthetic://") for s, _ in a["ids"])
        assert all(s.startswith(ELSEWHERE) for s, _ in b["ids"])  # another location ...
        assert identities(a) == identities(b)  # ... the same events, in the same order
        for key in ("hlf", "gru", "label", "n"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split}/{key}")
    assert sorted(os.listdir(remote)) == [
        "_COLLIDERFLOW", "_SUCCESS", "_metrics.json", "_scaler.json", "_summary.json", "test", "train",
    ]  # fmt: skip

    shards = download(f"{s3_root}/tfr", tmp_path / "remote-tfr")
    local_shards = tmp_path / "local" / "tfr"
    for split in ("train", "test"):
        names = sorted(os.listdir(local_shards / split))
        assert names and names == sorted(os.listdir(os.path.join(shards, split)))
        for name in names:  # record for record: the shards are equal byte for byte
            local, remote_shard = local_shards / split / name, pathlib.Path(shards, split, name)
            assert local.read_bytes() == remote_shard.read_bytes()
    assert {"_SUCCESS", "_scaler.json"} <= set(os.listdir(shards))


def test_an_incomplete_input_is_refused(bucket, s3_env, tmp_path):
    """A stage output without _SUCCESS (its writer still running, or dead) as the next stage's input:
    one line naming the URL, exit 2, nothing written."""
    write_ingested(str(tmp_path / "features"), {0: 2, 1: 2, 2: 2}, events_per_file=2)
    os.remove(tmp_path / "features" / "_SUCCESS")
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(str(tmp_path / "features") + "/", f"{bucket}/features/", recursive=True)
    one_file = tmp_path / "features" / "label=0" / "part-00000.parquet"
    fs.put(str(one_file), f"{bucket}/prepared/train/p.parquet")
    for module, source in (("jobs.prepare", "features"), ("jobs.tfrecords", "prepared")):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--input", f"s3://{bucket}/{source}", "--output",
             f"s3://{bucket}/out", "--master", "local[1]"],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, **s3_env}, timeout=120,
        )  # fmt: skip
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and len(errors[0]) < 500, proc.stderr[-2000:]
        assert f"s3://{bucket}/{source}: incomplete output (no _SUCCESS" in errors[0]
        assert "Traceback" not in proc.stderr
    fs.invalidate_cache()
    assert not [k for k in fs.find(bucket) if "/out/" in k]
