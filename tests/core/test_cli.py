"""The command line of every stage as a person meets it: --help with defaults and an example, and
errors that are one line under 500 characters naming the file or parameter, exit 2, no traceback,
found before any computation. Real subprocesses (`python -m jobs.<stage>`) on real files."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import re
import subprocess
import sys

import pytest

from jobs.core import storage
from jobs.core.cli import MESSAGE_LIMIT, one_line
from jobs.core.errors import BadInputError
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
            with storage.atomic_output_dir(url) as staging:
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
    ctx = multiprocessing.get_context("fork")
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
    assert files == sorted(["_SUCCESS", *(f"part-{k}" for k in range(20))])
    assert len({open(os.path.join(url, f"part-{k}")).read() for k in range(20)}) == 1
    assert os.listdir(tmp_path) == ["shared-output"]
