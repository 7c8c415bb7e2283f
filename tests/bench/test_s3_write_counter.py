"""bench.cluster's count of bytes sent to S3 (moto's server behind a WSGI layer): uploads by their
body, server-side copies by the source's size, so write amplification of a commit shows."""

from __future__ import annotations

from bench.cluster import CREDENTIALS, S3Server


def test_uploads_and_server_side_copies_are_counted(monkeypatch):
    from jobs.core import storage

    with S3Server() as s3:
        for key, value in {**CREDENTIALS, "COLLIDERFLOW_S3_ENDPOINT": s3.endpoint}.items():
            monkeypatch.setenv(key, value)
        fs, _ = storage.filesystem("s3://counted")
        fs.mkdir("counted")
        start = s3.counter.snapshot()
        fs.pipe("counted/a.bin", b"x" * 10_000)
        fs.copy("counted/a.bin", "counted/b.bin")  # what a copy-then-delete "rename" commit does
        uploaded, copied, copies = (
            after - before for after, before in zip(s3.counter.snapshot(), start, strict=True)
        )
        assert (uploaded, copied, copies) == (10_000, 10_000, 1)
        assert fs.cat("counted/b.bin") == b"x" * 10_000
