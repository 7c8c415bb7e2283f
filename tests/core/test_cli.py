"""The command line of every stage as a person meets it: --help with defaults and an example, and
errors that are one line under 500 characters naming the file or parameter, exit 2, no traceback,
found before any computation. Real subprocesses (`python -m jobs.<stage>`) on real files."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from jobs.core import commit, storage, store_probe
from jobs.core.cli import MESSAGE_LIMIT, check_range, one_line, run
from jobs.core.errors import BadInputError, InfrastructureError, UsageError
from jobs.core.spark import MASTER_PROBE_TIMEOUT_S, check_event_log_dir, check_master
from jobs.core.storage import STORES_HINT
from tests.conftest import ROOT

STAGES = ("dimuon", "ingest", "prepare", "tfrecords", "train", "evaluate", "metrics", "generate")


def run_stage(stage: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{stage}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and len(lines[0]) < MESSAGE_LIMIT
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --- --help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_help_shows_defaults_and_an_example(stage):
    text = importlib.import_module(f"jobs.{stage}.job").build_parser().format_help()
    assert f"example:\n  python -m jobs.{stage} " in text
    if stage != "generate":  # its options are on the subcommands
        assert re.search(r"\(default:? ", text)
        assert "(default: None)" not in text and "(default: False)" not in text


def test_generate_help_says_synthetic():
    proc = run_stage("generate", "--help")
    assert proc.returncode == 0 and "Synthetic" in proc.stdout and "not a physics simulation" in proc.stdout
    sub = run_stage("generate", "delphes", "--help")
    assert "(default: 42)" in sub.stdout and "(default: MuonTight)" in sub.stdout
    assert "example:\n  python -m jobs.generate delphes" in sub.stdout


# --- messages --------------------------------------------------------------------------------------


def test_one_line_collapses_and_bounds():
    assert one_line("a\n  b\tc") == "a b c"
    long = one_line("x" * 2000)
    assert len(long) < MESSAGE_LIMIT and long.endswith("…")


# --- output writability, before any computation -----------------------------------------------------


@pytest.fixture
def not_a_dir(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a directory would go")
    return blocker


def test_unwritable_output_is_refused_before_any_work(not_a_dir, testdata, tmp_path):
    out = str(not_a_dir / "out")
    hzz = testdata("uproot-HZZ.root")
    proc = run_stage("dimuon", "--input", hzz, "--output", out, "--master", "local[1]")
    assert_one_line_error(proc, "--output", out, "is a file, not a directory")
    assert "Spark" not in proc.stdout + proc.stderr  # refused before a session was started
    # an existing file as the output, and a directory nothing may be created in (even as root)
    assert_one_line_error(
        run_stage("prepare", "--input", str(tmp_path), "--output", str(not_a_dir)),
        str(not_a_dir),
        "exists and is not a directory",
    )
    assert_one_line_error(
        run_stage("metrics", "--run-dir", str(tmp_path), "--output", "/proc/colliderflow/report"),
        "/proc/colliderflow/report",
        "cannot write into /proc",
    )


@pytest.mark.parametrize("stage", ["ingest", "tfrecords", "evaluate", "train", "generate"])
def test_every_stage_checks_its_output_first(stage, not_a_dir, tmp_path):
    out = str(not_a_dir / "out")
    args = {
        "ingest": [x for c in ("qcd", "ttbar", "wjets") for x in ("--input", f"{c}={tmp_path}")],
        "tfrecords": ["--input", str(tmp_path)],
        "evaluate": ["--model", str(tmp_path / "m.keras"), "--test", str(tmp_path)],
        "train": ["--train", str(tmp_path), "--test", str(tmp_path)],
        "generate": ["nanoaod", "--events", "10"],
    }[stage]
    assert_one_line_error(run_stage(stage, *args, "--output", out), "--output", out)


# --- empty file --------------------------------------------------------------------------------------


def test_empty_file_says_empty(tmp_path):
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    proc = run_stage("dimuon", "--input", str(empty), "--output", str(tmp_path / "o"), "--master", "local[1]")
    assert_one_line_error(proc, str(empty), "empty file")
    assert not (tmp_path / "o").exists()


# --- --on-bad-file skip: one warning line per skipped file -------------------------------------------


def corrupt_middle(src: str, dst) -> str:
    """A copy whose middle third is overwritten: the header opens, reading entries fails."""
    data = bytearray(open(src, "rb").read())
    third = len(data) // 3
    data[third : 2 * third] = b"\x5a" * third
    dst.write_bytes(bytes(data))
    return str(dst)


def test_every_skipped_file_gets_a_warning(testdata, tmp_path):
    good = testdata("uproot-HZZ.root")
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(b"not ROOT" * 100)
    corrupt = corrupt_middle(good, tmp_path / "corrupt.root")  # fails inside a Spark task
    missing = str(tmp_path / "missing.root")
    out = tmp_path / "o"
    proc = run_stage(
        "dimuon", "--input", good, str(garbage), corrupt, missing, "--output", str(out),
        "--on-bad-file", "skip", "--master", "local[1]", "--no-plot", "--chunk-entries", "500",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line and "skipped" in line]
    for path, why in ((str(garbage), "not a readable ROOT file"), (corrupt, "cannot read entries"),
                      (missing, "no such file")):  # fmt: skip
        mine = [w for w in warnings if f"skipped {path}: " in w]
        assert len(mine) == 1 and why in mine[0] and len(mine[0]) < MESSAGE_LIMIT, warnings
    assert len(warnings) == 3


# --- two runs committing the same output at the same moment --------------------------------------------


def _commit_many(args) -> list[str]:
    """Commit `rounds` outputs to the same directory, each after a barrier shared with the other
    processes; the errors seen, as text (a raw OSError would be reported as such)."""
    url, barrier, rounds, tag = args
    seen = []
    for i in range(rounds):
        barrier.wait()
        try:
            with commit.atomic_output_dir(url) as staging:
                for n in range(20):
                    with open(os.path.join(staging, f"part-{n}"), "w") as f:
                        f.write(f"{tag}-{i}")
        except BadInputError as exc:
            seen.append(f"BadInputError: {exc}")
        except OSError as exc:
            seen.append(f"OSError: {exc!r}")
    return seen


def test_a_lost_commit_race_is_one_clear_line(tmp_path):
    url = str(tmp_path / "shared-output")
    ctx = multiprocessing.get_context("forkserver")  # not forked from this multi-threaded test process
    n, rounds = 4, 40
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.map(_commit_many, [(url, barrier, rounds, k) for k in range(n)])
    errors = [e for r in results for e in r]
    assert not [e for e in errors if e.startswith("OSError")], errors[:3]
    for e in errors:
        assert "another run committed this output at the same moment" in e and url in e and "\n" not in e
    # whatever won, the output is one run's complete output, and no staging or old copy is left
    files = sorted(os.listdir(url))
    assert files == sorted(["_COLLIDERFLOW", "_SUCCESS", *(f"part-{k}" for k in range(20))])
    assert len({open(os.path.join(url, f"part-{k}")).read() for k in range(20)}) == 1
    assert os.listdir(tmp_path) == ["shared-output"]


# --- checks before any work: the Spark master, the event-log directory, URLs, input dirs, bounds -------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize(
    "master", ["local", "local[1]", "local[*]", "local[2,3]", "local-cluster[2,1,512]", "k8s://https://k:443"]
)
def test_usable_masters_pass(master):
    assert check_master(master) == master


@pytest.mark.parametrize(
    ("master", "problem"),
    [
        ("bogus://nowhere", "not a Spark master; use local[N]"),
        ("yarn", "no YARN cluster is configured here"),
        ("local[0]", "needs at least 1 core"),
        ("local[2,0]", "needs at least 1 core"),
        ("local-cluster[0,1,512]", "expected local-cluster[WORKERS,CORES,MEMORY_MB]"),
        ("spark://127.0.0.1", "expected spark://HOST:PORT, got a master without a port"),
        ("k8s://", "expected k8s://https://HOST:PORT"),
    ],
)
def test_unusable_masters_are_named(master, problem, monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(UsageError) as err:
        check_master(master)
    assert str(err.value).startswith(f"--master {master}: ") and problem in str(err.value)


def test_yarn_is_accepted_once_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("YARN_CONF_DIR", str(tmp_path))
    assert check_master("yarn") == "yarn"


def test_a_standalone_master_that_does_not_answer_is_found_in_seconds():
    port, other = closed_port(), closed_port()
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match=f"no Spark master answers at 127.0.0.1:{port} .*127.0.0.1:{other}"):
        check_master(f"spark://127.0.0.1:{port},127.0.0.1:{other}")
    assert time.perf_counter() - t0 < 2 * MASTER_PROBE_TIMEOUT_S
    with socket.socket() as listening:  # one live master of an HA list is enough
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        live = f"spark://127.0.0.1:{port},127.0.0.1:{listening.getsockname()[1]}"
        assert check_master(live) == live


def test_a_master_from_the_environment_is_named_as_such(monkeypatch):
    monkeypatch.setenv("COLLIDERFLOW_SPARK_MASTER", "local[0]")
    with pytest.raises(UsageError, match=r"^\$COLLIDERFLOW_SPARK_MASTER local\[0\]: "):
        check_master(None)
    with pytest.raises(UsageError, match=r"^--master bogus: "):  # the option wins over the variable
        check_master("bogus")


def test_event_log_dir_must_be_able_to_become_a_directory(not_a_dir, tmp_path):
    check_event_log_dir(None)
    check_event_log_dir(str(tmp_path / "new" / "events"))  # created by Spark later, not here
    assert not (tmp_path / "new").exists()
    with pytest.raises(BadInputError, match=f"^--event-log-dir {not_a_dir}: is a file, not a directory$"):
        check_event_log_dir(str(not_a_dir))
    with pytest.raises(BadInputError, match=f"{not_a_dir} is a file, not a directory$"):
        check_event_log_dir(str(not_a_dir / "events"))
    with pytest.raises(BadInputError, match="storage protocol foo:// is not supported"):
        check_event_log_dir("foo://bucket/events")


@pytest.mark.parametrize(
    ("url", "kind"),
    [("foo://x/y", "foo"), ("bogus://", "bogus"), ("http://127.0.0.1:9/x", "http"), ("HTTPS://h/x", "https"),
     ("ftp://h/x", "ftp"), ("data:text/html,<script>", "data"), ("memory://x", "memory"),
     ("simplecache::http://h/x", "simplecache::"), ("file:///tmp/x::http://h/y", "file::")],
)  # fmt: skip
def test_unsupported_storage_protocols_are_refused_naming_the_option(url, kind):
    """Only the project's stores are ever opened: fsspec would fetch http(s), ftp and data: URLs (and
    `::` chains of them) as readily as s3://."""
    with pytest.raises(BadInputError) as err:
        storage.filesystem(url)
    assert str(err.value) == f"{url}: storage protocol {kind}:// is not supported; {STORES_HINT}"
    with pytest.raises(BadInputError, match=rf"^--input {re.escape(url)}: storage protocol"):
        storage.check_protocol(url, f"--input {url}")


def test_the_project_stores_are_accepted(tmp_path):
    for url in (str(tmp_path), f"file://{tmp_path}", "s3://bucket/key", "root://host//path"):
        storage.check_protocol(url, f"--input {url}")


def test_input_dir_is_a_directory_not_a_file(tmp_path):
    zero = tmp_path / "zero"
    zero.write_bytes(b"")
    store_probe.check_input_dir(str(tmp_path), "--input")
    with pytest.raises(BadInputError, match=f"^--input {zero}: is a file, not a directory \\(expected X\\)$"):
        store_probe.check_input_dir(str(zero), "--input", "X")
    with pytest.raises(BadInputError, match=f"^--run-dir {tmp_path}/nope: no such directory$"):
        store_probe.check_input_dir(str(tmp_path / "nope"), "--run-dir")


def test_check_range():
    check_range(None, "--partitions", 1, 10)
    check_range(10, "--partitions", 1, 10)
    with pytest.raises(UsageError, match=r"^--partitions must be between 1 and 10, got -3$"):
        check_range(-3, "--partitions", 1, 10)
    with pytest.raises(UsageError, match=r"^--mass-bins must be >= 1, got 0$"):
        check_range(0, "--mass-bins", 1)


# --- the exit code tells bad input (2, not retried) from an infrastructure fault (1, retried) ----------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadInputError("--input x", "no such directory"), 2),
        (UsageError("--partitions must be >= 1, got 0"), 2),
        (InfrastructureError("--pushgateway http://h:9091: cannot reach the Pushgateway"), 1),
    ],
)
def test_run_prints_one_last_line_and_the_exit_code(error, code, capsys):
    def main(argv):
        raise error

    assert run(main, []) == code
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {error}"
    # py4j's "Closing down clientserver connection" (INFO, at interpreter exit) cannot follow it
    assert not logging.getLogger("py4j.clientserver").isEnabledFor(logging.INFO)


def test_a_full_disk_is_the_machines_fault_in_one_line(tmp_path, capsys):
    """Issue 28: a full disk ended in a traceback, and tfrecords blamed its input (exit 2, never
    retried). ENOSPC and EDQUOT are infrastructure: exit 1 (retried), one line naming the file and
    the space its filesystem has left."""
    import errno

    def full(_argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "part-0.parquet"))

    assert run(full, []) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        line.startswith(f"error: {tmp_path}/out/part-0.parquet: No space left on device (")
        and "MB free" in line
    )

    def other(_argv):
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # any other OSError is not dressed up as one
        run(other, [])


def test_a_sigterm_after_the_work_exits_with_the_works_code(tmp_path):
    """Issue 28: evaluate, SIGTERMed right after its commit while TensorFlow tore down, exited -15 and
    was retried for nothing. After `run` returns, a SIGTERM exits with the stage's own code."""
    started = tmp_path / "tearing-down"
    script = textwrap.dedent(f"""
        import atexit, pathlib, time
        from jobs.core import cli
        atexit.register(lambda: (pathlib.Path({str(started)!r}).touch(), time.sleep(30)))
        cli.run_and_exit(lambda argv: 0)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
