"""jobs.generate's bounds: a count that would fill the disk is refused before a byte is written, in
one line naming the option, by an upper bound or by the free-space check that the generators'
on-disk size per event makes possible (checked here against what they really write)."""

from __future__ import annotations

import shutil

import pytest

from jobs.core import cli
from jobs.generate import delphes, nanoaod
from jobs.generate import job as generate_cli


def _refused(argv: list[str], capsys) -> str:
    assert cli.run(generate_cli.main, argv) == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "1000000000000"], "--events must be between 1 and 1000000000, got 1000000000000"),
        (["--events", "0"], "--events must be between 1 and 1000000000, got 0"),
        (["--events", "10", "--files", "100000"], "--files must be between 1 and 10000, got 100000"),
        (["--events", "10", "--files", "11"], "--files must be between 1 and --events, got 11"),
    ],
)
def test_counts_out_of_bounds_are_refused(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert _refused(["nanoaod", *args, "--output", str(out)], capsys) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_would_not_fit_is_refused_before_writing(tmp_path, capsys):
    events = generate_cli.MAX_EVENTS  # allowed by the bound; 21 TB of Delphes files
    assert events * delphes.BYTES_PER_EVENT > shutil.disk_usage(tmp_path).free
    line = _refused(["delphes", "--events", str(events), "--output", str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: --events {events}: needs ~") and line.endswith(" free"), line
    assert f"at {tmp_path}, only " in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("module", "events"), [(nanoaod, 100_000), (delphes, 500)])
def test_bytes_per_event_matches_what_is_written(module, events, tmp_path):
    module.generate(events=events, output=str(tmp_path / "out"))
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.root"))
    assert 0.7 < written / (events * module.BYTES_PER_EVENT) < 1.3
