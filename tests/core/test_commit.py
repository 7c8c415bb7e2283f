"""Writing outputs: what a stage may claim, atomic replacement (locally at every instant, proved by
killing the writer at each step of its commit), leftovers of dead writers, the object-store protocol."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from jobs.core import commit, listing, storage
from jobs.core.errors import BadInputError, UsageError
from tests.core.test_storage import executor_env, keys, write_files
from tests.s3_recording import copies, recorded_requests, uploaded_bytes

ROOT = pathlib.Path(__file__).resolve().parents[2]

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
        listing.expand_inputs([url], suffix=".root")
    assert err.value.source == url and "\n" not in str(err.value)
    with commit.atomic_output_dir(url) as out:  # the retry
        write_files(out, {"a.root": "1", "b.root": "2"})
    assert keys(bucket) == ["out/_COLLIDERFLOW", "out/_SUCCESS", "out/a.root", "out/b.root"]
    assert listing.expand_inputs([url], suffix=".root") == [f"s3://{bucket}/out/{n}.root" for n in "ab"]


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


# --- a local replace is atomic at every instant: the writer killed at each step of its commit ---------

WRITER = """
import os, sys
from jobs.core import commit
out, tag, begin = sys.argv[1:4]
open(begin, "w").close()
with commit.atomic_output_dir(out) as d:
    for n in range(3):
        with open(os.path.join(d, f"part-{n}"), "w") as f:
            f.write(tag)
"""
TRACED = "rename,renameat,renameat2,unlink,unlinkat,rmdir,openat,mkdir,mkdirat"
STRACE = shutil.which("strace")


def _write(out: pathlib.Path, tag: str, *strace_args: str) -> subprocess.CompletedProcess:
    begin = out.parent / "begin"
    cmd = [sys.executable, "-c", WRITER, str(out), tag, str(begin)]
    if strace_args:
        cmd = [STRACE, "-f", "-qq", *strace_args, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _commit_steps(tmp_path: pathlib.Path) -> list[tuple[str, int, str]]:
    """(syscall, its ordinal in the writer's main thread, the call) of every file-system step the writer
    takes on the output's folder after it starts: found by tracing one real replace."""
    tmp_path.mkdir()
    out = tmp_path / "out"
    assert _write(out, "old").returncode == 0
    trace = tmp_path / "trace"
    assert _write(out, "new", "-o", str(trace), "-e", f"trace={TRACED}").returncode == 0
    lines = trace.read_text().splitlines()
    main_pid = lines[0].split()[0]
    counts: dict[str, int] = {}
    steps, started = [], False
    for line in lines:
        pid, _, call = line.partition(" ")
        name = call.strip().split("(", 1)[0]
        if pid != main_pid or name not in TRACED.split(","):
            continue
        counts[name] = counts.get(name, 0) + 1
        started = started or str(tmp_path / "begin") in call
        if started and (str(tmp_path) in call or name in ("unlinkat", "rmdir")):
            steps.append((name, counts[name], call.strip()))
    return steps


def _files(directory: pathlib.Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir()} if directory.is_dir() else {}


def _kill_and_look(case: pathlib.Path, name: str, nth: int, call: str) -> str:
    """Replace an output with the writer killed at its `nth` `name` syscall: what a reader then sees
    ('old' or 'new', asserted complete), and that the next run commits and leaves no leftover."""
    old = {**{f"part-{n}": "old" for n in range(3)}, "_SUCCESS": ""}
    new = {**old, **{f"part-{n}": "new" for n in range(3)}}
    case.mkdir()
    out = case / "out"
    assert _write(out, "old").returncode == 0
    killed = _write(out, "new", "-o", os.devnull, "-e", f"inject={name}:signal=SIGKILL:when={nth}")
    assert killed.returncode != 0, f"not killed at {call}"
    files = _files(out)
    assert files.pop(commit.OWNER_MARKER, None), f"killed at {call}: {sorted(files)}"
    assert files in (old, new), f"killed at {call}: a reader sees {files}"
    assert _write(out, "again").returncode == 0  # the next run commits and reclaims the leftover
    assert sorted(p.name for p in case.iterdir()) == ["begin", "out"], f"killed at {call}"
    return "new" if files == new else "old"


@pytest.mark.skipif(STRACE is None, reason="strace is installed by tests/services/install.sh")
def test_a_reader_sees_the_old_or_the_new_output_whatever_step_the_writer_dies_at(tmp_path):
    steps = _commit_steps(tmp_path / "dry")
    names = {s[0] for s in steps}
    assert {"renameat2", "rmdir", "mkdir", "openat"} <= names and names & {"unlink", "unlinkat"}, steps
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        seen = set(pool.map(lambda k: _kill_and_look(tmp_path / f"k{k}", *steps[k]), range(len(steps))))
    assert seen == {"old", "new"}  # killed before the swap and after it


def test_sigterm_removes_the_staging_folder(tmp_path):
    out = tmp_path / "out"
    script = (
        "import sys, time\nfrom jobs.core import cli, commit\n"
        "def main(argv):\n"
        f"    with commit.atomic_output_dir({str(out)!r}) as d:\n"
        "        open(d + '/part', 'w').close(); print('ready', flush=True); time.sleep(60)\n"
        "sys.exit(cli.run(main, []))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert any(p.name.startswith(".out.staging-") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


# --- leftovers of dead writers are reclaimed, a live writer's never --------------------------------------


def _leftover(parent: pathlib.Path, name: str, age_s: float = 0, marker: bool = True) -> pathlib.Path:
    """A folder beside an output: with the owner marker a writer puts into its staging folder at once
    (`marker`), or without it (a user's folder that merely looks like one)."""
    path = parent / name
    path.mkdir()
    (path / "part").write_text("x")
    if marker:
        (path / commit.OWNER_MARKER).write_text(json.dumps(commit._owner_record()))
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_leftovers_of_dead_writers_go_live_ones_and_look_alikes_stay(tmp_path, caplog):
    host = commit._host()
    dead = _finished_pid()
    live = subprocess.Popen(["sleep", "60"])
    try:
        start = commit._start_time(live.pid)
        day = commit.LEFTOVER_AGE_S + 60
        gone = [
            _leftover(tmp_path, f".out.staging-{dead}-1234-0123abcd@{host}"),
            _leftover(tmp_path, f".out.old-{live.pid}-{int(start) + 1}-0123abcd@{host}"),  # pid reused
            _leftover(tmp_path, f".out.staging-{dead}-1-89abcdef@another-host", age_s=day),
        ]
        (gone[0] / "part").unlink()
        (gone[0] / commit.OWNER_MARKER).unlink()  # killed before its first file: empty, still ours
        kept = [
            _leftover(tmp_path, f".out.staging-{live.pid}-{start}-0123abcd@{host}"),
            _leftover(tmp_path, f".out.staging-{dead}-1-0123abcd@another-host"),  # cannot be checked: young
            _leftover(tmp_path, f".other.staging-{dead}-1234-0123abcd@{host}"),  # another output's
        ]
        # issue 28: a user's hidden folders named like leftovers, days old, were deleted by name and age
        look_alikes = [
            _leftover(tmp_path, ".out.staging-backup", age_s=3 * day, marker=False),
            _leftover(tmp_path, ".out.old-2025", age_s=3 * day, marker=False),
            _leftover(tmp_path, ".out.staging-a1b2c3d4@elsewhere", age_s=day),  # not the exact format
            _leftover(tmp_path, f".out.staging-{dead}-1234-0123abcd@{host}x", marker=False),
            _leftover(tmp_path, f".out.old-{dead}-1234-4567abcd@{host}", age_s=day, marker=False),
        ]
        with caplog.at_level(logging.WARNING), commit.atomic_output_dir(str(tmp_path / "out")) as d:
            pathlib.Path(d, "part").write_text("new")
        assert not any(p.exists() for p in gone)
        assert all(p.exists() and (p / "part").exists() for p in kept + look_alikes)
        warned = caplog.text
        assert all(f"left {p} alone" in warned for p in look_alikes), warned
    finally:
        live.kill()


def _finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- which output a stage may claim ----------------------------------------------------------------------


def test_relation_resolves_symlinks_dots_globs_and_prefixes(tmp_path):
    data = tmp_path / "data"
    (data / "nano").mkdir(parents=True)
    (tmp_path / "link").symlink_to(data / "nano")
    rel = commit.relation
    assert rel(str(data / "nano"), str(tmp_path / "link")) == "is the same folder as"
    assert rel(str(data), str(tmp_path / "link")) == "contains"
    assert rel(str(data / "nano" / "out"), str(tmp_path / "link")) == "lies inside"
    assert rel(str(data / "x" / ".." / "nano"), str(data / "nano")) == "is the same folder as"
    assert rel(str(data / "nano"), str(data / "nano" / "*.root")) == "is the same folder as"
    assert rel(str(data / "nano2"), str(data / "nano")) == ""
    assert rel("s3://b/runs/out", "s3://b/runs/out/x.parquet") == "contains"
    assert rel("s3://b/runs/output", "s3://b/runs/out") == ""  # a prefix on `/` boundaries only
    assert rel("s3://b/runs/out", "s3://other/runs/out") == ""
    with pytest.raises(BadInputError, match="'..' segments are not allowed"):  # an object store keeps them
        rel("s3://b/a/../runs", "s3://b/runs/out/*.root")
    assert rel("s3://b/runs", str(data)) == ""


def test_claim_refuses_inputs_and_folders_no_stage_wrote(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.root").write_text("x")
    for output, phrase in ((data, "is the same folder as"), (tmp_path, "contains")):
        with pytest.raises(BadInputError, match=phrase) as err:
            commit.claim_output(str(output), [str(data / "*.root")])
        assert str(output) in str(err.value) and str(data) in str(err.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    commit.claim_output(str(foreign), [])  # empty: fine
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="no colliderflow stage wrote"):
        commit.claim_output(str(foreign), [])
    with commit.atomic_output_dir(str(tmp_path / "ours")) as d:
        pathlib.Path(d, "part").write_text("1")
    commit.claim_output(str(tmp_path / "ours"), [str(data)])  # a previous output: replaceable
    assert json.loads((tmp_path / "ours" / commit.OWNER_MARKER).read_text())["version"]


def test_an_output_reached_through_a_symlink_is_replaced_where_it_is(tmp_path):
    """Issue 28: a symlinked output's old link was swapped aside as a `.staging` folder and never
    reclaimed. The output is written where its path leads (commit.local_target): the link stays, the
    folder it points to holds the new output, nothing is left beside either."""
    with commit.atomic_output_dir(str(tmp_path / "real")) as d:
        pathlib.Path(d, "part").write_text("old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with commit.atomic_output_dir(str(tmp_path / "link")) as d:
        pathlib.Path(d, "part").write_text("new")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "part").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
