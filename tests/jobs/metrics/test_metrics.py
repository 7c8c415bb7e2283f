"""jobs.metrics on a real run: a Spark event log written by the real di-muon job (local[1]) on a
generated NanoAOD sample, the job's _metrics.json and spectrum, and a real Prometheus Pushgateway."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.core import cli
from jobs.core.errors import BadInputError, InfrastructureError
from jobs.metrics import job as metrics_job
from jobs.metrics.eventlog import read_applications
from jobs.metrics.pushgateway import prometheus_registry
from tests.conftest import ROOT

CHUNK = 4000
FILES, EVENTS = 2, 20_000


def run_module(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLLIDERFLOW_SPARK_DRIVER_MEMORY": "1g", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def dimuon_run(tmp_path_factory):
    """A run directory as the cms_dimuon DAG leaves it: dimuon/ outputs and spark-events/."""
    base = tmp_path_factory.mktemp("metrics")
    run = base / "run"
    run_module(
        "jobs.generate",
        "nanoaod",
        "--events",
        str(EVENTS),
        "--files",
        str(FILES),
        "--seed",
        "7",
        "--output",
        str(base / "sample"),
    )
    run_module(
        "jobs.dimuon",
        "--input",
        str(base / "sample"),
        "--output",
        str(run / "dimuon"),
        "--chunk-entries",
        str(CHUNK),
        "--master",
        "local[1]",
        "--engine",
        "spark",
        "--event-log-dir",
        str(run / "spark-events"),
    )
    return run


def test_event_log_task_metrics_match_the_job(dimuon_run):
    job = json.loads((dimuon_run / "dimuon" / "_metrics.json").read_text())
    (app,) = read_applications(str(dimuon_run))
    assert app.complete and app.app_id == job["spark"]["app_id"] and app.failed_jobs == 0
    chunks = job["spark"]["tasks"]
    assert chunks == FILES * -(-EVENTS // FILES // CHUNK)  # one task per (file, entry range)
    map_stage = next(s for s in app.stages if not s.totals.shuffle_read_records)
    assert map_stage.num_tasks == map_stage.totals.tasks == chunks
    assert map_stage.totals.failed_tasks == 0
    assert map_stage.totals.shuffle_write_records == chunks  # one partial histogram per chunk
    totals = app.totals
    assert totals.shuffle_read_records == totals.shuffle_write_records
    assert totals.shuffle_read_bytes == totals.shuffle_write_bytes > 0
    assert 0 < totals.executor_cpu_seconds and 0 < totals.executor_run_seconds
    assert totals.gc_seconds <= totals.executor_run_seconds
    assert 0 < map_stage.duration_seconds <= app.duration_seconds
    assert totals.task_seconds_max <= app.duration_seconds


def test_worker_processes_log_their_tasks_for_the_report(dimuon_run, tmp_path):
    """The process engine (what `auto` picks for a local master) writes its tasks' metrics as an event
    log: jobs.metrics reads it like Spark's and gives the report a task table for the stage."""
    run = tmp_path / "run"
    run_module(
        "jobs.dimuon", "--input", str(dimuon_run.parent / "sample"), "--output", str(run / "dimuon"),
        "--chunk-entries", str(CHUNK), "--master", "local[2]", "--event-log-dir", str(run / "spark-events"),
    )  # fmt: skip
    job = json.loads((run / "dimuon" / "_metrics.json").read_text())
    assert job["spark"]["engine"] == "processes"
    (app,) = read_applications(str(run))
    assert app.complete and app.app_id == job["spark"]["app_id"] and app.app_name == "colliderflow-dimuon"
    (stage,) = app.stages
    assert stage.num_tasks == stage.totals.tasks == job["spark"]["tasks"] and stage.totals.failed_tasks == 0
    assert 1 <= app.executors <= 2  # the worker processes
    totals = app.totals
    assert 0 < totals.executor_cpu_seconds and 0 < totals.executor_run_seconds
    assert totals.input_bytes >= job["bytes_read"] > 0  # the ROOT baskets, at least
    assert totals.peak_execution_memory > 50e6  # a Python worker's resident memory
    assert totals.task_seconds_max <= app.duration_seconds
    summary = metrics_job.collect(str(run), str(tmp_path / "report"), dag_id="cms_dimuon", run_id="r")
    (entry,) = summary["spark"]["applications"]
    assert entry["stage"] == "dimuon" and entry["produced_output"]


def test_report_and_summary(dimuon_run, tmp_path):
    times = tmp_path / "times.json"
    times.write_text(
        json.dumps(
            {
                "dag_id": "cms_dimuon",
                "run_id": "manual__1",
                "tasks": [
                    {"task_id": "dimuon", "state": "success", "duration_seconds": 21.5, "try_number": 2}
                ],
            }
        )
    )
    run_module("jobs.metrics", "--run-dir", str(dimuon_run), "--stage-times", str(times))
    report = dimuon_run / "report"
    summary = json.loads((report / "summary.json").read_text())
    job = json.loads((dimuon_run / "dimuon" / "_metrics.json").read_text())
    assert (summary["dag_id"], summary["run_id"]) == ("cms_dimuon", "manual__1")
    assert summary["stage_times"]["dimuon"]["duration_seconds"] == 21.5
    stage = summary["stages"]["dimuon"]
    assert stage["events"] == EVENTS == stage["cutflow"]["cuts"][0]["events"]
    assert stage["bytes_read"] == job["bytes_read"] > 0 and len(stage["files"]) == FILES
    (app,) = summary["spark"]["applications"]
    assert app["stage"] == "dimuon" and app["totals"]["tasks"] >= job["spark"]["tasks"]
    page = (report / "report.html").read_text()
    assert "<tr><td>dimuon</td><td>success</td><td>2</td><td>21.5</td></tr>" in page  # the try column
    assert {"stage_times.png", "io_latency.png", "spark_executor_time.png"} <= set(summary["plots"])
    assert any(name.endswith("dimuon_mass.png") for name in summary["plots"])
    for name in summary["plots"]:
        assert (report / name).stat().st_size > 1000
        assert f"alt='{name}'" in page
    assert page.count("data:image/png;base64,") == len(summary["plots"])
    assert "Cut flow: dimuon" in page and all(c["cut"] in page for c in stage["cutflow"]["cuts"])
    assert not [p for p in dimuon_run.iterdir() if p.name.startswith(".report")]  # no staging left


def test_training_and_evaluation_outputs(tmp_path):
    """history.json and _metrics.json in the layout jobs.train / jobs.evaluate write."""
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "evaluate").mkdir()
    history = [
        {
            "epoch": e,
            "loss": 1.0 / (e + 1),
            "val_loss": 1.2 / (e + 1),
            "accuracy": 0.5 + 0.1 * e,
            "val_accuracy": 0.5 + 0.08 * e,
            "events": 1000,
            "train_seconds": 2.0,
        }
        for e in range(3)
    ]
    (run / "train" / "history.json").write_text(json.dumps(history))
    (run / "train" / "_metrics.json").write_text(
        json.dumps(
            {"stage": "train", "events": 3000, "wall_seconds": 7.0, "training_events_per_second": 500.0}
        )
    )
    auc = {"qcd": 0.91, "ttbar": 0.95, "wjets": 0.88}
    quality = {"min_auc": 0.9, "below_floor": {"wjets": 0.88}, "baseline": "/runs/r6/evaluate",
               "baseline_auc": {"qcd": 0.97, "ttbar": 0.95, "wjets": 0.89}, "max_auc_drop": 0.02,
               "drops": {"qcd": 0.06, "ttbar": 0.0, "wjets": 0.01}, "flagged_drops": {"qcd": 0.06},
               "passed": False}  # fmt: skip
    (run / "evaluate" / "_metrics.json").write_text(
        json.dumps(
            {
                "stage": "evaluate",
                "events": 900,
                "wall_seconds": 1.5,
                "auc": auc,
                "accuracy": 0.8123456789,
                "quality": quality,
            }
        )  # fmt: skip
    )
    from jobs.evaluate.job import plot_rejection

    eff = np.linspace(0.1, 1.0, 10)
    plot_rejection({"qcd": (eff, 1 / eff)}, str(run / "evaluate" / "roc_rejection.png"))
    summary = metrics_job.collect(str(run), dag_id="dl_trigger", run_id="r7")
    assert summary["evaluation"]["auc"] == auc
    # the evaluation's trigger view is copied into the report beside the ROC
    assert summary["plots"]["evaluate_roc_rejection.png"] == "Signal efficiency vs background rejection"
    report = run / "report"
    assert (report / "evaluate_roc_rejection.png").read_bytes()[:4] == b"\x89PNG"
    html = (report / "report.html").read_text()
    assert "Signal efficiency vs background rejection" in html
    # the verdict: FAILED, wjets below the floor in red, the qcd drop flagged, accuracy rounded
    assert "Model quality: FAILED" in html and "below it: wjets 0.88" in html
    assert '<tr class="fail">\n<td>wjets</td>' in html and '<tr class="flag">\n<td>qcd</td>' in html
    assert "accuracy 0.8123," in html and "0.8123456789" not in html
    assert summary["training"]["epochs"] == 3 and summary["training"]["training_events_per_second"] == 500.0
    assert "train_loss.png" in summary["plots"]
    reg = prometheus_registry(summary)
    assert reg.get_sample_value("colliderflow_auc", {"class": "ttbar"}) == 0.95
    assert reg.get_sample_value("colliderflow_training_events_per_second") == 500.0
    assert reg.get_sample_value("colliderflow_stage_wall_seconds", {"stage": "train"}) == 7.0


def test_bad_inputs_name_the_culprit(tmp_path, dimuon_run):
    proc = run_module("jobs.metrics", "--run-dir", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr and "--run-dir" in proc.stderr
    proc = run_module(
        "jobs.metrics",
        "--run-dir",
        str(dimuon_run),
        "--stage-times",
        "{not json",
        "--output",
        str(tmp_path / "r"),
        check=False,
    )
    assert proc.returncode == 2 and "--stage-times" in proc.stderr
    assert not (tmp_path / "r").exists()
    broken = tmp_path / "broken"
    shutil.copytree(dimuon_run / "spark-events", broken / "spark-events")
    (part,) = (broken / "spark-events").glob("eventlog_v2_*/events_*")
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(BadInputError, match=part.name):
        read_applications(str(broken))
    garbage = broken / "spark-events" / "local-1.zstd"
    garbage.write_bytes(b"not zstd at all" * 10)
    with pytest.raises(BadInputError, match="local-1.zstd: corrupt zstd"):
        read_applications(str(broken / "spark-events" / "local-1.zstd"))


def test_a_killed_earlier_attempt_neither_blocks_nor_inflates_the_report(dimuon_run, tmp_path):
    """A retried stage leaves the killed attempt's log (uncompressed, in progress, cut mid-line) and
    an unreadable stub beside the successful one: the report lists them, the stage's Spark metrics
    are those of the attempt that produced the output."""
    import zstandard

    run = tmp_path / "run"
    shutil.copytree(dimuon_run / "dimuon", run / "dimuon")
    shutil.copytree(dimuon_run / "spark-events", run / "spark-events")
    (part,) = (run / "spark-events").glob("eventlog_v2_*/events_*")
    job_app = json.loads((run / "dimuon" / "_metrics.json").read_text())["spark"]["app_id"]
    text = (
        zstandard.ZstdDecompressor().stream_reader(part.read_bytes(), read_across_frames=True).read().decode()
    )
    killed = text.replace(job_app, "local-1000").split('{"Event":"SparkListenerJobEnd"')[0]
    (run / "spark-events" / "local-1000.inprogress").write_text(killed + '{"Event":"SparkListenerTaskE')
    (run / "spark-events" / "local-1001.inprogress").write_text('{"Event":"SparkListenerLogStart"}\n')
    summary = metrics_job.collect(str(run), dag_id="cms_dimuon", run_id="r")
    apps = {a["app_id"]: a for a in summary["spark"]["applications"]}
    assert set(apps) == {job_app, "local-1000"}
    assert apps[job_app]["produced_output"] and apps[job_app]["complete"]
    assert not apps["local-1000"]["produced_output"] and not apps["local-1000"]["complete"]
    assert apps["local-1000"]["totals"]["tasks"] > 0 and apps["local-1000"]["stage"] == "dimuon"
    (err,) = summary["spark"]["unreadable_event_logs"]
    assert err["log"].endswith("local-1001.inprogress") and "ApplicationStart" in err["problem"]
    assert "local-1001.inprogress" in (run / "report" / "report.html").read_text()
    reg = prometheus_registry(summary)
    assert reg.get_sample_value(
        "colliderflow_spark_executor_run_seconds", {"stage": "dimuon"}
    ) == pytest.approx(apps[job_app]["totals"]["executor_run_seconds"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pushgateway():
    exe = shutil.which("prometheus-pushgateway")
    if not exe:
        pytest.skip("prometheus-pushgateway is not installed (bash tests/services/install.sh installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"pushgateway did not start: {proc.stderr.read1().decode()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("colliderflow_")
    }


def test_push_to_a_real_pushgateway(dimuon_run, tmp_path, pushgateway):
    times = json.dumps({"tasks": [{"task_id": "dimuon", "state": "success", "duration_seconds": 12.0}]})
    run_id = "scheduled__2026-11-25T02:00:00+00:00"
    summary = metrics_job.collect(
        str(dimuon_run),
        str(tmp_path / "report"),
        dag_id="cms_dimuon",
        run_id=run_id,
        stage_times=times,
        pushgateway=pushgateway,
    )
    series = scrape(pushgateway)
    base = {"job": "colliderflow", "dag": "cms_dimuon", "run": run_id, "instance": ""}

    def value(name: str, **labels: str) -> float:
        return series[(name, frozenset({**base, **labels}.items()))]

    stage = summary["stages"]["dimuon"]
    totals = summary["spark"]["applications"][0]["totals"]
    assert value("colliderflow_stage_wall_seconds", stage="dimuon") == 12.0
    assert value("colliderflow_events_total", stage="dimuon") == EVENTS
    assert value("colliderflow_events_per_second", stage="dimuon") == pytest.approx(
        stage["events_per_second"]
    )
    assert value("colliderflow_io_read_bytes_total", stage="dimuon") == stage["bytes_read"]
    for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
        expected = stage["io_latency_ms"][key] / 1e3
        assert value("colliderflow_io_read_latency_seconds", stage="dimuon", quantile=q) == pytest.approx(
            expected
        )
    assert value("colliderflow_spark_executor_run_seconds", stage="dimuon") == pytest.approx(
        totals["executor_run_seconds"]
    )
    assert value("colliderflow_spark_executor_cpu_seconds", stage="dimuon") > 0
    assert value("colliderflow_spark_shuffle_write_bytes", stage="dimuon") == totals["shuffle_write_bytes"]
    assert ("colliderflow_spark_gc_seconds", frozenset({**base, "stage": "dimuon"}.items())) in series
    # A rerun replaces the run's group instead of adding to it.
    times2 = json.dumps({"tasks": [{"task_id": "dimuon", "state": "success", "duration_seconds": 30.0}]})
    metrics_job.collect(
        str(dimuon_run),
        str(tmp_path / "report"),
        dag_id="cms_dimuon",
        run_id=run_id,
        stage_times=times2,
        pushgateway=pushgateway,
    )
    assert (
        scrape(pushgateway)[
            ("colliderflow_stage_wall_seconds", frozenset({**base, "stage": "dimuon"}.items()))
        ]
        == 30.0
    )


def test_report_from_a_run_on_object_storage(dimuon_run, bucket):  # noqa: F811 (fixture)
    """The same run read from and reported to S3 (moto's server on loopback): the Kubernetes layout."""
    from jobs.core.storage import filesystem

    fs, _ = filesystem(f"s3://{bucket}")
    fs.put(str(dimuon_run / "dimuon"), f"{bucket}/runs/r1/dimuon", recursive=True)
    fs.put(str(dimuon_run / "spark-events"), f"{bucket}/runs/r1/spark-events", recursive=True)
    fs.invalidate_cache()
    run = f"s3://{bucket}/runs/r1"
    summary = metrics_job.collect(run, dag_id="cms_dimuon", run_id="r1")
    local = metrics_job.collect(str(dimuon_run), str(dimuon_run.parent / "local-report"), dag_id="cms_dimuon")
    assert summary["stages"]["dimuon"]["events"] == local["stages"]["dimuon"]["events"] == EVENTS
    assert summary["spark"]["applications"][0]["totals"] == local["spark"]["applications"][0]["totals"]
    assert set(summary["plots"]) == set(local["plots"])
    fs.invalidate_cache()
    written = {p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/runs/r1/report")}
    assert {"report.html", "summary.json", "_SUCCESS", *summary["plots"]} <= written
    # (an event log aimed at an object store is written locally and copied: tests/core/test_spark.py)


# --- the gateway: a bad URL is bad input (exit 2, before any work), an outage an infrastructure fault ---


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A Pushgateway stand-in that answers every push with the status its server was given."""

    def do_PUT(self):
        self.send_error(self.server.status)

    do_POST = do_PUT

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_gateway():
    """Start a gateway answering `status`; yields a function status -> its URL."""
    servers = []

    def start(status: int) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
        server.status = status
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_an_unreachable_gateway_is_retried_and_commits_nothing(tmp_path, failing_gateway):
    run_dir, report = tmp_path / "run", tmp_path / "run" / "report"
    run_dir.mkdir()
    for gateway, error, problem in (
        (f"http://127.0.0.1:{_free_port()}", InfrastructureError, "cannot reach the Pushgateway"),
        (failing_gateway(503), InfrastructureError, "refused the push (HTTP 503"),
        (failing_gateway(404), BadInputError, "refused the push (HTTP 404"),
    ):
        with pytest.raises(error, match=f"^--pushgateway {gateway}: .*{re.escape(problem)}"):
            metrics_job.collect(str(run_dir), pushgateway=gateway)
        assert os.listdir(run_dir) == []  # no report, no staging: the retry redoes both
    metrics_job.collect(str(run_dir))  # the same run without a gateway commits its report
    assert (report / "_SUCCESS").exists()


def test_the_command_line_exit_codes_of_the_gateway(tmp_path, capsys):
    for gateway, code, text in (
        ("foo://x", 2, "--pushgateway: expected a URL like http://host:9091, got 'foo://x'"),
        ("http://", 2, "--pushgateway: expected a URL like http://host:9091"),
        (f"http://127.0.0.1:{_free_port()}", 1, "cannot reach the Pushgateway"),
    ):
        argv = ["--run-dir", str(tmp_path), "--pushgateway", gateway]
        assert cli.run(metrics_job.main, argv) == code
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.startswith("error: ") and text in last, last
        assert os.listdir(tmp_path) == []


def test_stages_follow_the_pipeline_order_of_their_tasks():
    from jobs.metrics.summary import build_summary

    folders = {"evaluation": "evaluate", "features": "ingest", "model": "train", "extra": "other"}
    outputs = {folder: {"metrics": {"stage": stage}} for folder, stage in folders.items()}
    times = {"tasks": [{"task_id": t} for t in ("check_inputs", "ingest", "train", "evaluate")]}
    summary = build_summary("run", "dl_trigger", "r", times, outputs, [])
    assert list(summary["stages"]) == ["ingest", "train", "evaluate", "other"]
