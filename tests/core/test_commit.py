"""Writing outputs: what a stage may claim, atomic replacement (locally at every instant, proved by
killing the writer at each step of its commit), leftovers of dead writers, the object-store protocol."""

from __future__ import annotations

import os

import pytest

from jobs.core import commit, storage
from jobs.core.errors import BadInputError, UsageError
from tests.core.test_storage import executor_env, keys, write_files
from tests.s3_recording import copies, recorded_requests, uploaded_bytes

# --- atomic commit to the object store ----------------------------------------------------------------


def test_commit_writes_output_and_marker(bucket):
    url = f"s3://{bucket}/runs/out"
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"cutflow.json": "{}", "part/one.txt": "1"})
    assert keys(bucket) == [
        "runs/out/_COLLIDERFLOW",
        "runs/out/_SUCCESS",
        "runs/out/cutflow.json",
        "runs/out/part/one.txt",
    ]
    storage.check_complete(url)


def test_rerun_replaces_previous_output(bucket):
    url = f"s3://{bucket}/out"
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"old.txt": "old", "shared.txt": "v1"})
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"shared.txt": "v2"})
    assert keys(bucket) == [
        "out/_COLLIDERFLOW",
        "out/_SUCCESS",
        "out/shared.txt",
    ]  # no stale file, no staging prefix left
    fs, _ = storage.filesystem(url)
    assert fs.cat_file(f"{bucket}/out/shared.txt") == b"v2"


def test_failure_inside_the_block_publishes_nothing(bucket):
    url = f"s3://{bucket}/out"
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"good.txt": "kept"})
    with pytest.raises(RuntimeError, match="job died"), commit.atomic_output_dir(url) as out:
        write_files(out, {"half.txt": "partial"})
        raise RuntimeError("job died")
    assert keys(bucket) == [
        "out/_COLLIDERFLOW",
        "out/_SUCCESS",
        "out/good.txt",
    ]  # the previous output, untouched


def test_failure_during_upload_leaves_nothing_complete(bucket, monkeypatch):
    """The upload dies after one object: the parts went straight to their final keys (no staging
    prefix), the failed run's objects are removed and nothing reads as complete."""
    url = f"s3://{bucket}/out"
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"good.txt": "kept"})
    fs, _ = storage.filesystem(url)
    real_put_file = type(fs)._put_file  # s3fs is async: the sync API drives these coroutines
    calls = []

    async def dying_put_file(self, lpath, rpath, *args, **kwargs):
        calls.append(rpath)
        if len(calls) > 1:
            raise OSError("connection reset during upload")
        return await real_put_file(self, lpath, rpath, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(OSError, match="connection reset"):
        patch.setattr(type(fs), "_put_file", dying_put_file)
        with commit.atomic_output_dir(url) as out:
            write_files(out, {"a.txt": "1", "b.txt": "2", "c.txt": "3"})
    assert len(calls) >= 2 and all(c.startswith(f"{bucket}/out/") and "staging" not in c for c in calls)
    assert keys(bucket) == []  # a rerun replaces the previous output; a failed one leaves none


def test_failure_with_the_store_gone_is_never_read_as_complete(bucket, monkeypatch):
    """The upload dies and so does the cleanup (the store went away): the target keeps _COMMITTING
    and no _SUCCESS, readers refuse it in one line, and a rerun repairs it."""
    url = f"s3://{bucket}/out"
    with commit.atomic_output_dir(url) as out:
        write_files(out, {"old.root": "old"})
    fs, _ = storage.filesystem(url)
    real_put_file = type(fs)._put_file  # s3fs is async: the sync API drives these coroutines
    puts: list[str] = []

    async def dying_put_file(self, lpath, rpath, *args, **kwargs):
        puts.append(rpath)
        if len(puts) > 1:
            raise OSError("node lost mid-commit")
        return await real_put_file(self, lpath, rpath, *args, **kwargs)

    def unreachable_after_the_loss(real):  # the sync methods are bound per instance
        def call(*args, **kwargs):
            if len(puts) > 1:
                raise OSError("store unreachable")
            return real(*args, **kwargs)

        return call

    with monkeypatch.context() as patch, pytest.raises(OSError, match="node lost"):
        patch.setattr(type(fs), "_put_file", dying_put_file)
        patch.setattr(fs, "rm", unreachable_after_the_loss(fs.rm))
        patch.setattr(fs, "rm_file", unreachable_after_the_loss(fs.rm_file))
        with commit.atomic_output_dir(url) as out:
            write_files(out, {"a.root": "1", "b.root": "2", "c.root": "3"})
    left = keys(bucket)
    assert "out/_SUCCESS" not in left and "out/old.root" not in left
    assert "out/_COMMITTING" in left and len([k for k in left if k.endswith(".root")]) < 3  # partial
    for required in (False, True):
        with pytest.raises(BadInputError, match="incomplete output") as err:
            storage.check_complete(url, required=required)
    with pytest.raises(BadInputError, match="incomplete output") as err:
        storage.expand_inputs([url], suffix=".root")
    assert err.value.source == url and "\n" not in str(err.value)
    with commit.atomic_output_dir(url) as out:  # the retry
        write_files(out, {"a.root": "1", "b.root": "2"})
    assert keys(bucket) == ["out/_COLLIDERFLOW", "out/_SUCCESS", "out/a.root", "out/b.root"]
    assert storage.expand_inputs([url], suffix=".root") == [f"s3://{bucket}/out/{n}.root" for n in "ab"]


def test_shared_output_is_written_in_place(bucket, tmp_path):
    """shared=True: executors write into the output URL itself; until the commit it holds
    _COMMITTING and no _SUCCESS (refused by readers), the commit only adds the owner marker and
    _SUCCESS, and every byte was uploaded once (the moto server's own request log: no copies,
    uploads == final sizes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    url = f"s3://{bucket}/ds"
    with recorded_requests(tmp_path) as requests:
        with commit.atomic_output_dir(url, shared=True) as out:
            assert out == url
            fs, path = storage.filesystem(f"{out}/label=0/part-0.parquet")
            with fs.open(path, "wb") as f:
                pq.write_table(pa.table({"x": [1.0, 2.0]}), f)
            storage.write_json(f"{out}/summary.json", {"rows": 2})
            assert keys(bucket) == ["ds/_COMMITTING", "ds/label=0/part-0.parquet", "ds/summary.json"]
            with pytest.raises(BadInputError, match="incomplete output"):
                storage.check_complete(url, required=True)
    assert keys(bucket) == ["ds/_COLLIDERFLOW", "ds/_SUCCESS", "ds/label=0/part-0.parquet", "ds/summary.json"]
    storage.check_complete(url, required=True)
    fs, _ = storage.filesystem(url)
    assert not copies(requests)
    assert uploaded_bytes(requests, f"{bucket}/ds/") == sum(fs.size(f"{bucket}/{k}") for k in keys(bucket))
    with pytest.raises(RuntimeError), commit.atomic_output_dir(url, shared=True) as out:
        storage.write_json(f"{out}/summary.json", {"rows": 0})
        raise RuntimeError("executor lost")
    assert keys(bucket) == []  # the failed rerun removed what it wrote (and the output it replaced)


def test_local_staging_is_uploaded_once(bucket, tmp_path):
    url = f"s3://{bucket}/runs/out"
    with recorded_requests(tmp_path) as requests:
        with commit.atomic_output_dir(url) as out:
            write_files(out, {"a.bin": "x" * 70_000, "sub/b.bin": "y" * 1234})
    fs, _ = storage.filesystem(url)
    assert not copies(requests)
    marker = fs.size(f"{bucket}/runs/out/{commit.OWNER_MARKER}")
    assert uploaded_bytes(requests, f"{bucket}/") == 70_000 + 1234 + marker
    assert keys(bucket) == [
        "runs/out/_COLLIDERFLOW",
        "runs/out/_SUCCESS",
        "runs/out/a.bin",
        "runs/out/sub/b.bin",
    ]


@pytest.mark.slow
def test_spark_executors_write_into_shared_staging(spark, bucket, s3_env):
    """Spark tasks (separate Python worker processes, credentials and endpoint from their environment
    only) write Parquet parts into the shared staging prefix; the driver commits."""
    import pyarrow.dataset as ds

    sc = spark.sparkContext
    url = f"s3://{bucket}/parts"
    with executor_env(spark, s3_env):
        with commit.atomic_output_dir(url, shared=True) as staging:

            def write_part(i: int) -> int:
                import os

                import pyarrow as pa
                import pyarrow.parquet as pq

                from jobs.core.storage import filesystem

                fs, path = filesystem(f"{staging}/part={i}/data.parquet")
                with fs.open(path, "wb") as f:
                    pq.write_table(pa.table({"i": [i] * 10, "pid": [os.getpid()] * 10}), f)
                return os.getpid()

            pids = sc.parallelize(range(4), 4).map(write_part).collect()
            storage.write_json(f"{staging}/summary.json", {"parts": 4})
    assert os.getpid() not in pids
    assert keys(bucket) == [
        "parts/_COLLIDERFLOW",
        "parts/_SUCCESS",
        *[f"parts/part={i}/data.parquet" for i in range(4)],
        "parts/summary.json",
    ]
    fs, path = storage.filesystem(url)
    table = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=True)
    assert sorted(table.to_table(columns=["i"]).column("i").to_pylist()) == sorted(list(range(4)) * 10)


def test_bucket_root_is_not_an_output(bucket):
    with pytest.raises(UsageError, match="not a bucket root"), commit.atomic_output_dir(f"s3://{bucket}"):
        pass
