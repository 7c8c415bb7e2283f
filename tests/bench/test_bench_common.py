"""The benchmark harness's own arithmetic and bookkeeping (fast; the benchmarks themselves are not run
in CI): marginal rates, targets, the memory sampler on a real child process, the table."""

from __future__ import annotations

import json
import sys

import pytest

from bench import common, table
from bench.rdf_dimuon import MASS_RANGE as RDF_MASS_RANGE
from jobs.dimuon.job import MASS_RANGE


def test_marginal_rate_cancels_the_fixed_start_up():
    # 10 s start-up, 1 M events/s on 2 cores -> 0.5 M events/s/core; start-up recovered as the intercept
    small, large = (1000, 10.0 + 1000 / 1e6), (20_000_000, 10.0 + 20.0)
    rate = common.marginal_rate(small, large, cores=2)
    assert rate == pytest.approx(0.5e6)
    assert common.startup_seconds(small, rate, cores=2) == pytest.approx(10.0)
    assert common.marginal_rate((1000, 12.0), (20_000_000, 11.0), cores=2) is None  # noise: no slope


def test_targets_say_met_or_by_how_much():
    assert common.target(3.5e6, 7e6, "rate") == {
        "what": "rate", "goal": 7e6, "value": 3.5e6, "met": False, "ratio": 0.5,
    }  # fmt: skip
    assert common.target(0.8, 1.0, "wall ratio", higher_is_better=False)["met"] is True
    assert common.target(None, 1.0, "not run")["met"] is False


def test_rdataframe_script_fills_the_same_mass_range_as_the_job():
    assert RDF_MASS_RANGE == MASS_RANGE


def test_peak_rss_sees_the_largest_child(tmp_path):
    hog = "b = bytearray(200_000_000); import time; time.sleep(1.5)"
    wall, peak = common.run_command([sys.executable, "-c", hog])
    assert wall >= 1.5
    assert peak["driver"] >= 200  # MB, the child itself is the measured root here
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hog!r}])"
    _, peak = common.run_command([sys.executable, "-c", parent])
    assert peak["task"] >= 200 and peak["driver"] < 200


def test_memory_growth_flags_a_stage_that_does_not_stream():
    peaks = {"small": {"driver": 100.0, "jvm": 400.0, "task": None}, "large": {"driver": 120.0, "jvm": 900.0}}
    assert common.memory_growth(peaks) == {
        "large_over_small": {"driver": 1.2, "jvm": 2.25}, "tolerance": 1.5, "streams": False,
    }  # fmt: skip
    assert common.memory_growth({"small": {}, "large": {}}) is None


def test_table_shows_targets_and_missing_files(tmp_path):
    common.write_result(
        str(tmp_path),
        "dimuon",
        {
            "events_per_s_per_core": 3.5e6,
            "peak_rss_mb": {"small": {"driver": 150.0}, "large": {"driver": 160.0}},
            "targets": {"per_core": common.target(3.5e6, 7e6, "marginal events/s/core >= 7 M")},
        },
    )
    written = json.loads((tmp_path / "dimuon.json").read_text())
    assert written["machine"]["cores"] >= 1
    assert written["memory_growth"] == {
        "large_over_small": {"driver": 1.067},
        "tolerance": 1.5,
        "streams": True,
    }
    text = table.render(str(tmp_path))
    assert "3.50 M ev/s/core" in text
    assert "memory large/small input: driver 1.07x: streams" in text
    assert "[MISSED] marginal events/s/core >= 7 M: 3.50 M vs 7.00 M (0.50x the goal)" in text
    assert "ingest: no results" in text
    assert len(text.splitlines()) < 40
