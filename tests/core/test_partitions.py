"""Partitions that never move (jobs.core.partitions) on a real store: claims by night, folder and hash
bucket, a file in one partition only (also with writers racing, locally and on S3), failed nights,
changed files, and the refusals a stage gives a wrong manifest."""

from __future__ import annotations

import json
import multiprocessing
import pathlib

import pytest

from jobs.core.errors import BadInputError
from jobs.core.partition_log import FORMAT, create_exclusive, entry_url, read_log
from jobs.core.partitions import Source, bucket, claim_new, list_source, log_results, plan_run, read_manifest


def touch_root(path: pathlib.Path, size: int = 10) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return str(path)


def finish(plan) -> None:
    """What a stage does once its output is committed: log each partition's result."""
    manifests = [read_manifest(url) for url in plan.manifests]
    log_results(manifests, {m.key: f"/results/{m.key}" for m in manifests}, "/results")


def keys_and_files(root: str, source: Source) -> dict[str, list[str]]:
    from jobs.core.partitions import fold, of_source

    return {p.key: sorted(f["url"] for f in p.files) for p in of_source(fold(read_log(root)), source)}


@pytest.fixture
def layout(tmp_path):
    inp = tmp_path / "in"
    for name in ("f0000", "f0001", "f0002"):
        touch_root(inp / f"{name}.root")
    return (
        Source({"input": [str(inp)]}, str(tmp_path / "runs")),
        str(tmp_path / "runs" / "d" / "partitions"),
        inp,
    )


def test_a_partition_never_moves_when_files_arrive(layout):
    """The issue's case: one file added between two nights. The first night's partition keeps exactly
    its files; the second holds only the new one; a third night with nothing new takes nothing."""
    source, root, inp = layout
    first = plan_run(root, source, "r1", "2026-03-01")
    assert [p.key for p in first.partitions] == ["2026-03-01"]
    finish(first)
    before = keys_and_files(root, source)
    touch_root(inp / "extra.root")
    second = plan_run(root, source, "r2", "2026-03-02")
    assert [p.key for p in second.partitions] == ["2026-03-02"]
    after = keys_and_files(root, source)
    assert after["2026-03-01"] == before["2026-03-01"]
    assert after["2026-03-02"] == [str(inp / "extra.root")]
    finish(second)
    assert plan_run(root, source, "r3", "2026-03-03").partitions == []
    everything = plan_run(root, source, "r4", "2026-03-04", take="all")
    assert [p.key for p in everything.partitions] == ["2026-03-01", "2026-03-02"]


def test_hash_buckets_and_folders_keep_their_members(tmp_path):
    inp = tmp_path / "in"
    files = [touch_root(inp / run / f"{run}_{i}.root") for run in ("Run2012B", "Run2012C") for i in range(3)]
    source = Source({"input": [f"{inp}/*/*.root"]}, str(tmp_path / "runs"))
    root = str(tmp_path / "runs" / "d" / "partitions")
    plan = plan_run(root, source, "r1", "2026-03-01", scheme="folder")
    assert {p.key: len(p.files) for p in plan.partitions} == {"Run2012B": 3, "Run2012C": 3}
    finish(plan)
    touch_root(inp / "Run2012B" / "late.root")
    later = plan_run(root, source, "r2", "2026-03-02", scheme="folder")
    assert [p.key for p in later.partitions] == ["Run2012B@2026-03-02"]
    named = plan_run(root, source, "r3", "2026-03-03", take="named", names=["Run2012B"])
    assert {p.key for p in named.partitions} == {"Run2012B", "Run2012B@2026-03-02"}
    buckets = {f: bucket(f, 16) for f in files}
    touch_root(inp / "Run2012C" / "more.root")
    assert {f: bucket(f, 16) for f in files} == buckets  # a bucket depends on the name alone
    assert all(b.endswith("/16") and len(b) == 5 for b in buckets.values())


def _claim(args: tuple[str, str, str]) -> None:
    root, inputs, run = args
    source = Source({"input": [inputs]}, root.rsplit("/", 2)[0])
    claim_new(root, source, run, f"night-{run}", "night", list_source(source))


def test_racing_runs_claim_each_file_once(layout):
    """Four processes claim the same input at once: every file lands in exactly one partition."""
    source, root, inp = layout
    for i in range(20):
        touch_root(inp / f"g{i:04d}.root")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_claim, [(root, str(inp), f"r{i}") for i in range(4)])
    claimed = [f for files in keys_and_files(root, source).values() for f in files]
    assert sorted(claimed) == sorted(str(p) for p in inp.glob("*.root"))
    assert len(read_log(root)) == len(keys_and_files(root, source))


def test_racing_on_s3_claims_each_file_once(bucket, s3_env):
    """The same race on S3 (moto): the log's conditional PUT lets one writer win each number."""
    from jobs.core.storage import filesystem

    fs, _ = filesystem(f"s3://{bucket}")
    for i in range(8):
        fs.pipe_file(f"{bucket}/in/f{i}.root", b"x" * (i + 1))
    root = f"s3://{bucket}/runs/d/partitions"
    args = [(root, f"s3://{bucket}/in", f"r{i}") for i in range(3)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.map(_claim, args)
    source = Source({"input": [f"s3://{bucket}/in"]}, f"s3://{bucket}/runs")
    claimed = [f for files in keys_and_files(root, source).values() for f in files]
    assert sorted(claimed) == [f"s3://{bucket}/in/f{i}.root" for i in range(8)]
    with pytest.raises(FileExistsError):  # the store itself refuses a second writer of one number
        create_exclusive(entry_url(root, 1), b"{}")


def test_a_failed_nights_partition_is_taken_by_the_next_run(layout):
    source, root, inp = layout
    failed = plan_run(root, source, "night1", "2026-03-01")  # its stage never logs a result
    touch_root(inp / "new.root")
    while_live = plan_run(root, source, "night2", "2026-03-02", is_live=lambda run: run == "night1")
    assert [p.key for p in while_live.partitions] == ["2026-03-02"]  # a running night keeps its own
    after = plan_run(root, source, "night2", "2026-03-02", is_live=lambda run: False)  # night2's retry
    assert [p.key for p in after.partitions] == ["2026-03-02", "2026-03-01"]
    assert any("2026-03-01" in note and "taken by this run" in note for note in after.notes)
    retried = plan_run(root, source, "night1", "2026-03-01")  # the failed run, cleared, keeps its own
    assert failed.manifests[0] in retried.manifests


def test_a_changed_file_is_named_and_its_partition_marked_stale(layout):
    source, root, inp = layout
    finish(plan_run(root, source, "r1", "2026-03-01"))
    touch_root(inp / "f0001.root", size=20)
    plan = plan_run(root, source, "r2", "2026-03-02")
    assert plan.partitions == []  # not claimed a second time
    assert plan.notes == [
        f"{inp}/f0001.root changed after partition 2026-03-01 recorded it: partition 2026-03-01 is stale"
    ]
    stale = [e for e in read_log(root) if e.kind == "stale"]
    assert [(e.key, e.body["files"]) for e in stale] == [("2026-03-01", [f"{inp}/f0001.root"])]
    assert plan_run(root, source, "r3", "2026-03-03").notes == []  # said once


def test_wrong_names_and_manifests_are_refused(layout, tmp_path):
    source, root, inp = layout
    plan = plan_run(root, source, "r1", "2026-03-01")
    with pytest.raises(
        BadInputError, match="partition 2027-01-01: is not recorded under .*known: 2026-03-01"
    ):
        plan_run(root, source, "r2", "2026-03-02", take="named", names=["2027-01-01"])
    other = Source({"input": [str(tmp_path / "other")]}, source.output_root)
    with pytest.raises(BadInputError, match="recorded for other inputs"):
        plan_run(root, other, "r2", "2026-03-02", take="named", names=["2026-03-01"])
    with pytest.raises(BadInputError, match="belongs to output root"):
        read_manifest(plan.manifests[0], str(tmp_path / "elsewhere" / "dimuon"))
    newer = entry_url(root, 99)
    pathlib.Path(newer).write_text(json.dumps({"format": FORMAT + 1, "kind": "claim", "key": "x"}))
    with pytest.raises(BadInputError, match=f"format {FORMAT + 1}; this colliderflow reads {FORMAT}"):
        read_log(root)


def test_partitions_on_xrootd_claim_once_and_refuse_a_second_create(xrootd_server):
    """The log on EOS's protocol (a real XRootD server): XRootD's own exclusive create orders the
    entries; a file's version is its mtime as the server reports it."""
    out = xrootd_server.root / "runs"
    out.mkdir()
    out.chmod(0o777)  # the server runs as nobody
    for i in range(3):
        xrootd_server.put(
            touch_root(xrootd_server.root.parent / "src" / f"x{i}.root", size=i + 1), f"in/x{i}.root"
        )
    source = Source({"input": [xrootd_server.url("in")]}, xrootd_server.url("runs"))
    root = f"{source.output_root}/d/partitions"
    (first,) = plan_run(root, source, "r1", "2026-03-01").partitions
    assert [f["url"] for f in first.files] == [xrootd_server.url(f"in/x{i}.root") for i in range(3)]
    assert all(f["version"] for f in first.files)
    assert plan_run(root, source, "r2", "2026-03-02", is_live=lambda run: run == "r1").partitions == []
    with pytest.raises(FileExistsError):
        create_exclusive(entry_url(root, 1), b"{}")
