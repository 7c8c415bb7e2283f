"""Results that add up (jobs.dimuon.cumulative): partitions reduced night by night, then added, equal
bin for bin one `jobs.dimuon` run over all their files; rerunning a partition replaces its
contribution; a recorded file that is gone, or a result that is gone, is named, never silently left
out."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import uproot

from jobs.core.errors import BadInputError
from jobs.core.partitions import Source, partitions_root, plan_run
from jobs.dimuon import cumulative, job


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
