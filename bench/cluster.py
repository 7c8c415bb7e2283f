"""Cluster overhead (issue 11): `jobs.dimuon` and `jobs.ingest` on a two-worker Spark standalone cluster
with s3:// data (moto's server on loopback), beside local[2] on local files, in the same script on the
same events. Workers and the driver each run in a private mount namespace (bench/fixtures/cluster.py), so the
cluster shares no disk: every byte goes through S3.

    python -m bench.cluster [--dimuon-events 2000000] [--ingest-events 5000] [--quick]

Reported per stage: events/s/core of both set-ups by process wall clock (start-up included) and by
the job's own wall clock (_metrics.json), their ratio (the overhead of the cluster and of S3), and
bytes per event of the stage's output on S3: stored, and written (every PUT/part upload body plus
every server-side copy, counted by a WSGI layer in front of moto), so that write amplification, e.g.
a commit that copies each part, shows as written / stored > 1. Results: out/bench/cluster.json.
Needs root (unshare -m) and java; otherwise the JSON says why nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass, field

from bench.common import add_common_args, bytes_under, python_module, run_command, write_result

BUCKET = "cf-bench"
CLUSTER_CORES = 2  # two workers, one core each, against local[2]
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "colliderflow-bench",
    "AWS_SECRET_ACCESS_KEY": "colliderflow-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class WriteCounter:
    """WSGI middleware: bytes uploaded (PUT and multipart part bodies) and copied server-side."""

    app: object
    uploaded: int = 0
    copied: int = 0
    copies: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
        if method == "PUT" and source:
            span = environ.get("HTTP_X_AMZ_COPY_SOURCE_RANGE", "")  # UploadPartCopy: bytes=a-b
            if span.startswith("bytes="):
                first, _, last = span[len("bytes=") :].partition("-")
                size = int(last) - int(first) + 1
            else:
                size = _object_size(urllib.parse.unquote(source))
            with self.lock:
                self.copies += 1
                self.copied += size
        elif method in ("PUT", "POST"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            # aws-chunked bodies carry the payload size in this header (s3fs/botocore may use it)
            length = int(environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or length)
            with self.lock:
                self.uploaded += length
        return self.app(environ, start_response)

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.uploaded, self.copied, self.copies


def _object_size(source: str) -> int:
    """Size of the copy source `/bucket/key` in moto's in-process backend (0 if it cannot tell)."""
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket, _, key = source.lstrip("/").partition("/")
        key = key.split("?versionId=")[0]
        return int(s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key).size)
    except Exception:  # noqa: BLE001 - accounting only; never fail the request
        return 0


class S3Server:
    """moto's S3 server on a free loopback port, behind the WriteCounter."""

    def __enter__(self) -> S3Server:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.counter = WriteCounter(DomainDispatcherApplication(create_backend_app))
        self.server = make_server("127.0.0.1", 0, self.counter, threaded=True)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


def _job_metrics(output: str) -> dict:
    from jobs.core import storage

    fs, path = storage.filesystem(output.rstrip("/") + "/_metrics.json")
    fs.invalidate_cache()
    with fs.open(path) as f:
        return json.load(f)


def measure(name: str, argv_for, local_out: str, s3_out: str, master: str, s3: S3Server) -> dict:
    """Both set-ups of one stage: argv_for(output, master, on_s3) -> argv of the stage."""
    from bench.fixtures.cluster import isolated, isolated_env

    local_wall, local_peak = run_command(argv_for(local_out, f"local[{CLUSTER_CORES}]", False))
    local = _job_metrics(local_out)
    before = s3.counter.snapshot()
    # isolated_env points SPARK_CONF_DIR at bench/fixtures/cluster_conf (no host-local shuffle reads)
    cluster_wall, cluster_peak = run_command(isolated(argv_for(s3_out, master, True)), env=isolated_env())
    after = s3.counter.snapshot()
    remote = _job_metrics(s3_out)
    events = remote["events"]
    written_rows = remote.get("events_written", events)
    stored = bytes_under(s3_out)
    uploaded, copied = after[0] - before[0], after[1] - before[1]
    local_rate = local["events"] / local_wall / CLUSTER_CORES
    cluster_rate = events / cluster_wall / CLUSTER_CORES
    return {
        "events": events,
        "local_events_per_s_per_core": local_rate,
        "cluster_events_per_s_per_core": cluster_rate,
        "overhead_ratio": local_rate / cluster_rate,
        "local_job_events_per_s_per_core": local["events"] / local["wall_seconds"] / CLUSTER_CORES,
        "cluster_job_events_per_s_per_core": events / remote["wall_seconds"] / CLUSTER_CORES,
        "job_overhead_ratio": remote["wall_seconds"] / local["wall_seconds"],
        "local_wall_seconds": local_wall,
        "cluster_wall_seconds": cluster_wall,
        "s3_bytes_per_event": stored / max(written_rows, 1),
        "s3_bytes_written_per_event": (uploaded + copied) / max(written_rows, 1),
        "s3_write_amplification": (uploaded + copied) / stored if stored else None,
        "s3_server_side_copies": after[2] - before[2],
        "local_bytes_per_event": bytes_under(local_out)
        / max(local.get("events_written", local["events"]), 1),
        "driver_peak_rss_mb": {"local": local_peak, "cluster": cluster_peak},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--dimuon-events", type=int, default=None, help="default 2 M (quick 200 k)")
    parser.add_argument("--ingest-events", type=int, default=None, help="per class; default 5000 (quick 500)")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--workdir", default="out/bench/cluster")
    add_common_args(parser)
    args = parser.parse_args(argv)
    dimuon_events = args.dimuon_events or (200_000 if args.quick else 2_000_000)
    ingest_events = args.ingest_events or (500 if args.quick else 5000)

    from bench.fixtures.cluster import cluster_unavailable, spark_cluster

    reason = cluster_unavailable()
    if reason:
        print(f"bench.cluster: not measured: {reason}")
        write_result(args.results_dir, "cluster", {"status": f"not measured: {reason}", "stages": {}})
        return 0

    from bench.dimuon import make_input as make_nanoaod
    from bench.ingest import make_input as make_delphes
    from jobs.core import storage
    from jobs.dltrigger_schema import CLASSES, SAMPLES

    workdir = os.path.abspath(args.workdir)
    root_dir, _, _ = make_nanoaod(workdir, dimuon_events, args.files)
    delphes = make_delphes(os.path.join(workdir, f"delphes-{ingest_events}"), ingest_events, args.files)
    with S3Server() as s3:
        os.environ.update({**CREDENTIALS, "COLLIDERFLOW_S3_ENDPOINT": s3.endpoint})
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            os.environ.pop(key, None)
        fs, _ = storage.filesystem(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        fs.put(root_dir + "/", f"{BUCKET}/nanoaod/", recursive=True)
        for name in CLASSES:
            fs.put(delphes[name] + "/", f"{BUCKET}/delphes/{SAMPLES[name]}/", recursive=True)
        s3_root = f"s3://{BUCKET}"

        def dimuon(out: str, master: str, on_s3: bool) -> list[str]:
            src = f"{s3_root}/nanoaod/" if on_s3 else root_dir
            return python_module(
                "jobs.dimuon", "--input", src, "--output", out, "--master", master, "--no-plot"
            )

        def ingest(out: str, master: str, on_s3: bool) -> list[str]:
            argv = python_module("jobs.ingest", "--output", out, "--master", master)
            for name in CLASSES:
                src = f"{s3_root}/delphes/{SAMPLES[name]}/" if on_s3 else delphes[name]
                argv += ["--input", f"{name}={src}"]
            return argv

        stages = {}
        with spark_cluster(workers=2, cores=1) as cluster:
            for name, argv_for in (("dimuon", dimuon), ("ingest", ingest)):
                local_out = os.path.join(workdir, f"local-{name}")
                stages[name] = measure(
                    name, argv_for, local_out, f"{s3_root}/out/{name}", cluster.master_url, s3
                )
                print(f"{name}: {json.dumps(stages[name], indent=1, default=float)}")
    write_result(
        args.results_dir,
        "cluster",
        {
            "status": "measured",
            "cluster": "Spark standalone, 2 workers x 1 core, private mount namespaces "
            "(bench/fixtures/cluster.py)",
            "storage": "moto S3 server on loopback",
            "events": {"dimuon": dimuon_events, "ingest_per_class": ingest_events},
            "stages": stages,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
