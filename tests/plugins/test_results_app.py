"""The results views through a real `airflow api-server` with the colliderflow plugin (SimpleAuthManager,
the embedded default's login): the plugin and its external views are registered; without a login every
route is refused; with one, a run's report, a stage's output and the nightly trends are served from the
run directory that the run's own `output_root` names; paths that would leave it (`..`, encoded `..`,
absolute, a symlink pointing out) are refused and nothing outside is ever returned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from colliderflow import environment
from colliderflow.dagkit import safe_path
from tests.dags.conftest import airflow, free_port, http_ok, wait_for

pytestmark = pytest.mark.slow
SECRET = "not-for-your-eyes"


class Api:
    def __init__(self, url: str):
        self.url = url
        body = json.dumps({"username": "admin", "password": "admin"}).encode()
        req = urllib.request.Request(f"{url}/auth/token", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def get(self, path: str, token: str | None = "mine", raw: bool = False) -> tuple[int, bytes, str]:
        """(status, body, final URL); `raw`: the path goes out byte for byte (no client normalising)."""
        headers = {"Authorization": f"Bearer {self.token}"} if token == "mine" else {}
        url = self.url + path
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
                return r.status, r.read(), r.url
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), url

    def post(self, path: str, payload: dict) -> dict:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(self.url + path, json.dumps(payload).encode(), headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)


def write_s3_run(root: str, dag_id: str, run_id: str) -> str:
    """A run directory on an object store: its report and evaluation."""
    from jobs.core.storage import filesystem

    run = f"{root}/{dag_id}/{safe_path(run_id)}"
    fs, path = filesystem(run)
    fs.pipe_file(
        f"{path}/report/report.html", f"<html><body><h1>report of {run_id}</h1></body></html>".encode()
    )
    fs.pipe_file(
        f"{path}/evaluation/_metrics.json", json.dumps({"stage": "evaluate", "auc": {"qcd": 0.91}}).encode()
    )
    return run


def write_run(root, dag_id: str, run_id: str, auc: dict, outside) -> str:
    """A run directory as the stages leave it: a report, an evaluation, a symlink pointing out of it."""
    run = root / dag_id / safe_path(run_id)
    (run / "report").mkdir(parents=True)
    (run / "evaluation").mkdir()
    (run / "report" / "report.html").write_text(f"<html><body><h1>report of {run_id}</h1></body></html>")
    summary = {"evaluation": {"auc": auc, "accuracy": 0.8, "quality": {"passed": min(auc.values()) >= 0.9}},
               "stages": {"ingest": {"figures": {"events_written": 3000}}}, "training": {}}  # fmt: skip
    (run / "report" / "summary.json").write_text(json.dumps(summary))
    (run / "evaluation" / "_metrics.json").write_text(
        json.dumps({"stage": "evaluate", "auc": auc, "events": 9})
    )
    (run / "evaluation" / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    os.symlink(outside, run / "report" / "escape")
    return str(run)


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_server):
    base = tmp_path_factory.mktemp("results")
    s3 = {"AWS_ACCESS_KEY_ID": "colliderflow-test", "AWS_SECRET_ACCESS_KEY": "test-only",
          "AWS_DEFAULT_REGION": "us-east-1", "COLLIDERFLOW_S3_ENDPOINT": s3_server}  # fmt: skip
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    env = environment.airflow_env(home=str(base / "home"))
    env.update({"COLLIDERFLOW_DATA": str(base / "data"), **s3})
    environment.prepare(env)
    assert airflow(env, "dags", "reserialize").returncode == 0
    port = free_port()
    log = open(base / "api-server.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "airflow", "api-server", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}/api/v2/monitor/health"), 300, "the api-server", proc)
        api = Api(url)
        runs = {}
        for i, auc in enumerate(
            ({"qcd": 0.97, "ttbar": 0.95, "wjets": 0.93}, {"qcd": 0.74, "ttbar": 0.56, "wjets": 0.52})
        ):
            root = base / f"root{i}"  # each run under its own output_root, as a run's Param may say
            run = api.post(
                "/api/v2/dags/dl_trigger/dagRuns", {"logical_date": None, "conf": {"output_root": str(root)}}
            )
            runs[run["dag_run_id"]] = write_run(root, "dl_trigger", run["dag_run_id"], auc, outside)
        with pytest.MonkeyPatch.context() as patch:  # a third run, on the object store
            for key, value in s3.items():
                patch.setenv(key, value)
            from jobs.core.storage import filesystem

            filesystem("s3://runs")[0].mkdir("runs")
            run = api.post(
                "/api/v2/dags/dl_trigger/dagRuns",
                {"logical_date": None, "conf": {"output_root": "s3://runs/r"}},
            )
            s3_run = (run["dag_run_id"], write_s3_run("s3://runs/r", "dl_trigger", run["dag_run_id"]))
        yield api, runs, s3_run
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def test_the_plugin_and_its_views_are_registered(server):
    api, _, _ = server
    status, body, _ = api.get("/api/v2/plugins")
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "colliderflow")
    views = {v["name"]: v for v in plugin["external_views"]}
    assert (
        views["Run report"]["destination"] == "dag_run"
        and views["Stage output"]["destination"] == "task_instance"
    )
    assert views["Nightly trends"]["href"] == "colliderflow/trends/{DAG_ID}"


def test_without_a_login_everything_is_refused(server):
    api, runs, _ = server
    run_id = next(iter(runs))
    run = f"/colliderflow/runs/dl_trigger/{run_id}"
    for path in (f"{run}/report", f"{run}/files/report/report.html", f"{run}/tasks/evaluate",
                 "/colliderflow/trends/dl_trigger"):  # fmt: skip
        status, body, _ = api.get(path, token=None)
        assert status in (401, 403) and b"report of" not in body, (path, status)
    status, _, _ = api.get(f"/colliderflow/runs/dl_trigger/{run_id}/report", token="forged")
    assert status in (401, 403)


def test_report_stage_output_and_trends(server):
    api, runs, _ = server
    good, bad = list(runs)
    status, body, final = api.get(f"/colliderflow/runs/dl_trigger/{urllib.request.quote(good)}/report")
    assert (
        status == 200 and f"report of {good}".encode() in body and final.endswith("/files/report/report.html")
    )
    status, body, _ = api.get(f"/colliderflow/runs/dl_trigger/{urllib.request.quote(good)}/tasks/evaluate")
    assert status == 200 and b"evaluation/roc.png" in body and b"0.97" in body
    status, body, _ = api.get(f"/colliderflow/runs/dl_trigger/{urllib.request.quote(good)}/tasks/stage_times")
    assert status == 200 and b"bookkeeping" in body
    status, body, _ = api.get("/colliderflow/trends/dl_trigger")
    page = body.decode()
    assert status == 200 and "2 run(s) with a report" in page and page.count("data:image/png;base64,") >= 2
    assert '<tr class="fail">' in page and good in page and bad in page  # the run that did not learn, in red
    status, _, _ = api.get("/colliderflow/runs/dl_trigger/no-such-run/report")
    assert status == 404


@pytest.mark.parametrize(
    "path",
    ["report/../../../outside/secret.txt", "report/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
     "%2Fetc%2Fpasswd", "report/escape/secret.txt", "report//report.html", "report/./report.html"],
)  # fmt: skip
def test_paths_that_leave_the_run_directory_are_refused(server, path):
    api, runs, _ = server
    run_id = urllib.request.quote(next(iter(runs)))
    status, body, _ = api.get(f"/colliderflow/runs/dl_trigger/{run_id}/files/{path}", raw=True)
    assert status in (403, 404) and SECRET.encode() not in body and b"root:" not in body, (path, status)


def test_a_run_on_an_object_store(server):
    """A run whose output_root is s3:// (moto on loopback): its report and stage page come from there."""
    api, _, (run_id, url) = server
    status, body, _ = api.get(f"/colliderflow/runs/dl_trigger/{urllib.request.quote(run_id)}/report")
    assert status == 200 and f"report of {run_id}".encode() in body
    status, body, _ = api.get(f"/colliderflow/runs/dl_trigger/{urllib.request.quote(run_id)}/tasks/evaluate")
    assert status == 200 and url.encode() in body and b"0.91" in body
