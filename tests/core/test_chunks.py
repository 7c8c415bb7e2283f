"""Driver planning: files are opened in parallel, yet checked and planned in input order."""

from __future__ import annotations

import time

import pytest

from jobs.core.chunks import plan_files
from jobs.core.errors import BadInputError, UsageError
from jobs.core.metering import IOStats


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from jobs.generate import nanoaod

    out = tmp_path_factory.mktemp("plan") / "nano"
    return nanoaod.generate(events=8 * 500 + 3, output=str(out), files=8, seed=1)


def slow_first(files: list[str], seconds: float):
    """tree_name that holds each file for `seconds`, the earlier ones longest (a slow store's
    metadata round trips, with later files answering first)."""

    def tree_name(url: str, stats: IOStats) -> str:
        time.sleep(seconds * (len(files) - files.index(url)) / len(files))
        return "Events"

    return tree_name


def test_opens_in_parallel_checks_in_order(files):
    seen: list[str] = []
    t0 = time.perf_counter()
    plan = plan_files(files, slow_first(files, 0.5), lambda url, t: seen.append(url), 200, "fail")
    elapsed = time.perf_counter() - t0
    assert seen == files and list(plan.chunks) == files  # input order, whatever opened first
    assert elapsed < 0.5 * sum((i + 1) / 8 for i in range(8)) / 2  # serial opening: 2.25 s
    assert [c.start for c in plan.chunks[files[0]]] == [0, 200, 400] and plan.chunks[files[0]][-1].stop == 501
    assert all(plan.io[f].bytes_read > 0 for f in files)
    serial = plan_files(files, slow_first(files, 0.0), lambda url, t: None, 200, "fail", threads=1)
    assert serial.chunks == plan.chunks


def test_first_bad_file_in_order_is_the_error(files, tmp_path):
    bad = [str(tmp_path / f"missing-{i}.root") for i in range(2)]
    urls = [files[0], bad[0], files[1], bad[1], *files[2:]]
    with pytest.raises(BadInputError) as err:
        plan_files(urls, slow_first(urls, 0.2), lambda url, t: None, 200, "fail")
    assert err.value.source == bad[0]
    plan = plan_files(urls, slow_first(urls, 0.2), lambda url, t: None, 200, "skip")
    assert set(plan.bad) == set(bad) and list(plan.chunks) == files


def test_a_plan_of_too_many_tasks_is_refused_with_its_numbers(files, monkeypatch):
    """Issue 28: `--chunk-entries 1` planned 100,000 one-event tasks. A plan over MAX_TASKS is refused
    before any task runs, naming the option and the counts."""
    from jobs.core import chunks

    monkeypatch.setattr(chunks, "MAX_TASKS", 1000)  # 4,003 entries at one per task
    with pytest.raises(
        UsageError, match=r"^--chunk-entries 1: plans 4,003 tasks for 4,003 entries \(at most 1,000\)"
    ):
        plan_files(files, lambda url, stats: "Events", lambda url, table: None, 1, "fail")
    plan = plan_files(files, lambda url, stats: "Events", lambda url, table: None, 8, "fail")
    assert 500 < sum(map(len, plan.chunks.values())) <= 1000
