"""One spelling-independent reading of a path or URL (jobs.core.locations): the protocol as fsspec
would pick it, and the store and path that the commit's overlap check and the allowed data roots
compare. `~/x` and `$HOME/x`, `file:///x` and `/x`, `s3a://` and `s3://` are one place."""

from __future__ import annotations

import os

import pytest

from jobs.core.commit import relation
from jobs.core.errors import BadInputError
from jobs.core.locations import Location, NotALocation, lexical, protocol, resolved


@pytest.mark.parametrize(
    ("url", "kind"),
    [("/a/b", "file"), ("a/b", "file"), ("file:///a", "file"), ("s3://b/k", "s3"), ("S3A://b/k", "s3a"),
     ("root://h//eos/x", "root"), ("oci://b@ns/k", "oci"), ("http://h/x", "http"),
     ("data:text/html,x", "data"), ("DATA:,x", "data"), ("simplecache::s3://b/k", "simplecache::"),
     ("C://x", "file")],
)  # fmt: skip
def test_the_protocol_is_the_one_fsspec_would_open(url, kind):
    assert protocol(url) == kind


def test_spellings_of_one_place_are_one_location(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    same = {"~/real", f"{tmp_path}/real", f"file://{tmp_path}/real", f"{tmp_path}/x/../real/", "~/link"}
    assert {resolved(url) for url in same} == {Location("file", str(tmp_path / "real"))}
    assert lexical("~/link") == Location("file", str(tmp_path / "link"))  # the spelling alone: no I/O
    assert lexical("s3a://b//runs/x/") == lexical("s3://b/runs/x") == Location("s3://b", "/runs/x")
    assert lexical("root://eos.cern.ch//eos/opendata") == Location("root://eos.cern.ch", "/eos/opendata")


def test_within_stops_at_a_folder_boundary():
    runs = lexical("s3://b/runs")
    assert lexical("s3://b/runs/x").within(runs) and lexical("s3://b/runs").within(runs)
    assert not lexical("s3://b/runs2").within(runs) and not lexical("s3://c/runs/x").within(runs)
    assert not lexical("/b/runs/x").within(runs)


@pytest.mark.parametrize("url", ["s3://b/runs/../secret", "s3://b/./x", "http://h/x", "ftp://h/x", "data:,x"])
def test_urls_that_name_no_safe_place_are_refused(url):
    with pytest.raises(NotALocation):
        lexical(url)


def test_a_tilde_output_over_its_input_is_seen(tmp_path, monkeypatch):
    """Issue 28's loss: `--input $HOME/nano --output '~/nano'` once deleted the input (the check did not
    expand `~`, fsspec's writer did)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "nano").mkdir()
    assert relation("~/nano", f"{tmp_path}/nano") == "is the same folder as"
    assert relation(f"{tmp_path}/nano", "~/nano/*.root") == "is the same folder as"
    assert relation("~/nano/out", os.path.join(str(tmp_path), "nano")) == "lies inside"
    with pytest.raises(BadInputError, match="'..' segments are not allowed"):
        relation("s3://b/x/../y", "s3://b/y")
