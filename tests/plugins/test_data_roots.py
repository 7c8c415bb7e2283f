"""The allowed data roots (colliderflow.data_roots): a run's paths are checked against the roots the
deployment names, by spelling before any I/O, then through symlinks; the refusal is one line naming
the Param and the roots. The views and the first task of a real Airflow use it:
tests/plugins/test_results_app.py and tests/dags/test_params.py."""

from __future__ import annotations

import json

import pytest

from colliderflow import data_roots
from colliderflow.data_roots import outside_roots, parse_roots, refusal


@pytest.fixture
def root(tmp_path):
    (tmp_path / "data" / "runs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "runs" / "out").symlink_to(tmp_path / "elsewhere")
    return tmp_path


def test_paths_inside_a_root_are_allowed(root, monkeypatch):
    roots = [f"{root}/data", "s3://physics/cf", "root://eos.example//eos/cms"]
    monkeypatch.setenv("HOME", str(root))
    for url in (f"{root}/data/runs", f"{root}/data", f"file://{root}/data/runs/x", "~/data/runs",
                f"{root}/data/runs/*.root", "s3://physics/cf/runs", "s3a://physics/cf",
                "root://eos.example//eos/cms/x"):  # fmt: skip
        assert outside_roots(url, roots) is None, url


@pytest.mark.parametrize(
    ("url", "problem"),
    [("{root}/elsewhere", "outside the allowed data roots"),
     ("{root}/data/../elsewhere", "outside the allowed data roots"),
     ("{root}/data2", "outside the allowed data roots"),
     ("{root}/data/runs/out/x", "leads out of the allowed data roots through a symlink"),
     ("data/runs", "not an absolute path or URL"),
     ("s3://physics/cf2", "outside the allowed data roots"),
     ("s3://other/cf", "outside the allowed data roots"),
     ("s3://physics/cf/../x", "'..' segments are not allowed"),
     ("root://attacker.example//eos/cms", "outside the allowed data roots"),
     ("http://127.0.0.1:8799/internal.txt?q=", "storage protocol http:// is not supported"),
     ("https://169.254.169.254/latest/meta-data", "storage protocol https:// is not supported"),
     ("ftp://h/x", "storage protocol ftp:// is not supported"),
     ("data:text/html,<script>", "storage protocol data:// is not supported"),
     ("simplecache::s3://physics/cf", "storage protocol simplecache::")],
)  # fmt: skip
def test_paths_outside_the_roots_are_refused(root, url, problem):
    roots = [f"{root}/data", "s3://physics/cf", "root://eos.example//eos/cms"]
    assert problem in (outside_roots(url.format(root=root), roots) or "")


def test_the_refusal_is_one_line_naming_the_param_and_the_roots(root):
    line = refusal("output_root", "http://127.0.0.1:8799/x?q=", [f"{root}/data", "s3://physics/cf"])
    assert line.startswith("output_root='http://127.0.0.1:8799/x?q=': storage protocol http://")
    assert f"({root}/data, s3://physics/cf)" in line and data_roots.ENV in line
    assert "\n" not in line and len(line) < 500
    assert len(refusal("input", "/x" * 2000, [f"/r{i:04d}" for i in range(500)])) < 500
    assert refusal("output_root", f"{root}/data/runs", [f"{root}/data"]) is None


def test_the_roots_are_the_data_root_and_the_operators(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLIDERFLOW_DATA", str(tmp_path / "demo"))
    monkeypatch.setenv(data_roots.ENV, json.dumps(["s3://a/b", "/srv/data"]))
    assert data_roots.allowed_roots() == [str(tmp_path / "demo"), "s3://a/b", "/srv/data"]
    monkeypatch.setenv(data_roots.ENV, " s3://a/b , ,/srv/data")
    assert data_roots.allowed_roots() == [str(tmp_path / "demo"), "s3://a/b", "/srv/data"]
    assert parse_roots("[not json") == [] and parse_roots(None) == []
    # a root naming no store is ignored, never widens the list
    assert outside_roots("http://h/x", ["http://h"]) is not None
