"""What reached the S3 server, request by request: moto's own request recorder on the loopback server
of tests/conftest.py (in this process), so requests from Spark's Python workers count too. Used to
prove that an output crosses to the store once (bytes uploaded == the final objects' size) and that
no server-side copy is made."""

from __future__ import annotations

import contextlib
import json
import pathlib
import urllib.parse
from collections.abc import Iterator


@contextlib.contextmanager
def recorded_requests(directory: pathlib.Path) -> Iterator[list[dict]]:
    """Record every request the moto server handles inside the block; the list is filled on exit."""
    from moto.moto_api import recorder

    saved = recorder._location
    recorder._location = str(directory / "moto-recording.jsonl")
    recorder.reset_recording()
    recorder.start_recording()
    out: list[dict] = []
    try:
        yield out
    finally:
        recorder.stop_recording()
        with open(recorder._location) as f:
            out.extend(_entries(f.read()))
        recorder._location = saved


def _entries(text: str) -> Iterator[dict]:
    """The recorded requests, whatever their line breaks: the threaded server's handlers append an
    entry and its newline as separate writes, so two entries can share a line (seen in CI)."""
    decoder, at = json.JSONDecoder(), 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        entry, at = decoder.raw_decode(text, at)
        yield entry


def _key(request: dict) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(request["url"]).path).lstrip("/")


def _header(request: dict, name: str) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == name), None)


def copies(requests: list[dict]) -> list[str]:
    """Keys written by a server-side copy (CopyObject / UploadPartCopy)."""
    return [_key(r) for r in requests if r["method"] == "PUT" and _header(r, "x-amz-copy-source")]


def uploaded_bytes(requests: list[dict], prefix: str) -> int:
    """Body bytes of every object upload (PutObject, UploadPart) to keys under `prefix`
    ('bucket/path/'): what the writers sent over the wire."""
    return sum(
        int(_header(r, "x-amz-decoded-content-length") or _header(r, "content-length") or 0)
        for r in requests
        if r["method"] == "PUT" and not _header(r, "x-amz-copy-source") and _key(r).startswith(prefix)
    )
