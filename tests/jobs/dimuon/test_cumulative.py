"""Results that add up (jobs.dimuon.cumulative): partitions reduced night by night, then added, equal
bin for bin one `jobs.dimuon` run over all their files; rerunning a partition replaces its
contribution; a recorded file that is gone, or a result that is gone, is named, never silently left
out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uproot

from jobs.core.errors import BadInputError
from jobs.core.partition_log import read_log
from jobs.core.partitions import Source, partitions_root, plan_run
from jobs.dimuon import cumulative, job
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Two nights: three files, then two more; each night's partition reduced by the stage."""
    from jobs.generate import nanoaod

    base = tmp_path_factory.mktemp("nights")
    nanoaod.generate(events=25_000, output=str(base / "all"), files=5, seed=7)
    files = sorted((base / "all").glob("*.root"))
    (base / "in").mkdir()
    runs = base / "runs"
    source = Source({"input": [str(base / "in")]}, str(runs))
    root = partitions_root(str(runs), "cms_dimuon")
    manifests = []
    for night, batch in (("2026-03-01", files[:3]), ("2026-03-02", files[3:])):
        for f in batch:
            shutil.copy(f, base / "in" / f.name)
        plan = plan_run(root, source, f"run-{night}", night)
        job.run([], str(runs / "cms_dimuon" / night / "dimuon"), manifests=plan.manifests, engine="processes",
                plot=False)  # fmt: skip
        manifests += plan.manifests
    return base, runs, source, root, manifests


def histograms(path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {k.split(";")[0]: f[k].values() for k in f.keys(cycle=False)}


def test_the_cumulative_equals_one_run_over_every_file(nights):
    base, runs, _, _, manifests = nights
    out = runs / "cms_dimuon" / "cumulative"
    cumulative.build(manifests[-1], str(out), plot=False)
    job.run([str(base / "in")], str(base / "single"), engine="processes", plot=False)
    summed, single = histograms(out / "histograms.root"), histograms(base / "single" / "histograms.root")
    assert set(summed) == set(single) == {"dimuon_mass", "muon_pt", "muon_eta", "muon_phi"}
    for name in single:
        assert np.array_equal(summed[name], single[name]), name
    cuts = lambda p: [c["events"] for c in json.loads((p / "cutflow.json").read_text())["cuts"]]  # noqa: E731
    assert cuts(out) == cuts(base / "single") and cuts(out)[0] == 25_000
    listed = json.loads((out / "partitions.json").read_text())["partitions"]
    assert [(p["key"], p["files"]) for p in listed] == [("2026-03-01", 3), ("2026-03-02", 2)]
    assert (out / "_SUCCESS").exists()


def test_rerunning_a_partition_replaces_its_contribution(nights):
    base, runs, source, root, manifests = nights
    out = runs / "cms_dimuon" / "cumulative"
    cumulative.build(manifests[-1], str(out), plot=False)
    before = histograms(out / "histograms.root")
    again = plan_run(root, source, "rerun", "2026-03-05", take="named", names=["2026-03-01"])
    job.run([], str(runs / "cms_dimuon" / "rerun" / "dimuon"), manifests=again.manifests, engine="processes",
            plot=False)  # fmt: skip
    cumulative.build(manifests[-1], str(out), plot=False)
    after = histograms(out / "histograms.root")
    assert all(np.array_equal(before[k], after[k]) for k in before)  # replaced, not added twice
    runs_listed = [p["run"] for p in json.loads((out / "partitions.json").read_text())["partitions"]]
    assert runs_listed[0].endswith("rerun/dimuon")


def test_gone_files_and_gone_results_are_named(nights, tmp_path):
    base, runs, source, root, manifests = nights
    moved = sorted((base / "in").glob("*.root"))[0]
    shutil.move(moved, tmp_path / moved.name)
    out = runs / "cms_dimuon" / "gone" / "dimuon"
    try:
        with pytest.raises(BadInputError, match=f"{moved}: recorded in a partition but gone from the store"):
            job.run([], str(out), manifests=manifests[:1], engine="processes", plot=False)
        assert not out.exists()
    finally:
        shutil.move(tmp_path / moved.name, moved)
    shutil.rmtree(runs / "cms_dimuon" / "2026-03-02")
    with pytest.raises(BadInputError, match="the result of partition 2026-03-02 is gone"):
        cumulative.build(manifests[-1], str(tmp_path / "cumulative"), plot=False)


# --- a night killed at each step: the next run, or the retry, leaves everything consistent ---------------

STRACE = shutil.which("strace")


def _night(inp, runs, run_id: str, key: str, *strace_args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.jobs.dimuon.night", str(inp), str(runs), run_id, key]
    if strace_args:
        cmd = [STRACE, "-f", "-qq", *strace_args, *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _steps(tmp_path, files) -> list[tuple[str, int, str]]:
    """(syscall, its ordinal in the night's driver, the step it interrupts), read off a traced night:
    the claim's log entry, the stage's start (its first link after the claim), the stage's commit,
    the partition's result entry, the cumulative result's commit."""
    inp = tmp_path / "traced" / "in"
    inp.mkdir(parents=True)
    for f in files:
        shutil.copy(f, inp / f.name)
    trace = tmp_path / "traced" / "trace"
    done = _night(inp, tmp_path / "traced" / "runs", "r1", "2026-03-01", "-o", str(trace),
                  "-e", "trace=link,linkat,renameat2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    driver = trace.read_text().splitlines()[0].split()[0]
    calls = [
        line.split()[1].split("(")[0] for line in trace.read_text().splitlines() if line.split()[0] == driver
    ]
    paths = [line for line in trace.read_text().splitlines() if line.split()[0] == driver]
    links = [p for p in paths if p.split()[1].startswith(("link(", "linkat("))]
    logged = [i + 1 for i, p in enumerate(links) if "/partitions/log/" in p]
    assert len(logged) == 2 and calls.count("renameat2") == 2, paths
    return [("link", logged[0], "the claim"), ("link", logged[0] + 1, "the stage's start"),
            ("renameat2", 1, "the stage's commit"), ("link", logged[1], "the partition's result"),
            ("renameat2", 2, "the cumulative commit")]  # fmt: skip


@pytest.mark.skipif(STRACE is None, reason="strace is installed by tests/services/install.sh")
def test_a_night_killed_at_each_step_is_made_whole_by_the_next_run_or_its_retry(nights, tmp_path):
    """A night's process SIGKILLed at each of its steps (strace inject), then the next night's run
    (nothing new) or the killed run's retry: every file is in exactly one partition and the cumulative
    result is complete and equal to one run over all the files, bin for bin."""
    base = nights[0]
    files = sorted((base / "in").glob("*.root"))[:3]
    job.run([str(f) for f in files], str(tmp_path / "reference"), engine="processes", plot=False)
    reference = histograms(tmp_path / "reference" / "histograms.root")

    def case(n: int, step: tuple[str, int, str]) -> str:
        call, nth, what = step
        where = tmp_path / f"case{n}"
        (where / "in").mkdir(parents=True)
        for f in files:
            shutil.copy(f, where / "in" / f.name)
        killed = _night(where / "in", where / "runs", "r1", "2026-03-01", "-o", os.devnull,
                        "-e", f"inject={call}:signal=SIGKILL:when={nth}")  # fmt: skip
        assert killed.returncode != 0, f"not killed at {what}"
        again = ("r1", "2026-03-01") if n % 2 else ("r2", "2026-03-02")  # the retry, or the next night
        done = _night(where / "in", where / "runs", *again)
        assert done.returncode == 0, (what, done.stderr[-2000:])
        log = read_log(partitions_root(str(where / "runs"), "cms_dimuon"))
        claims = sorted(f["url"] for e in log if e.kind == "claim" for f in e.body["files"])
        assert claims == sorted(str(where / "in" / f.name) for f in files), (what, claims)  # each file once
        summed = histograms(where / "runs" / "cms_dimuon" / "cumulative" / "histograms.root")
        assert all(np.array_equal(summed[k], reference[k]) for k in reference), what
        return what

    steps = _steps(tmp_path, files)
    with ThreadPoolExecutor(2) as pool:
        seen = list(pool.map(case, range(len(steps)), steps))
    assert len(seen) == 5
