"""The results views through a real `airflow api-server` with the colliderflow plugin (SimpleAuthManager,
the embedded default's login): the plugin and its external views are registered; without a login every
route is refused; with one, a run's report, a stage's output and the nightly trends are served from the
run directory that the run's own `output_root` names; paths that would leave it (`..`, encoded `..`,
absolute, a symlink pointing out) are refused and nothing outside is ever returned."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

from colliderflow import data_roots, environment
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
        status, body, url, _ = self.fetch(path, token)
        return status, body, url

    def fetch(self, path: str, token: str | None = "mine") -> tuple[int, bytes, str, dict[str, str]]:
        """(status, body, final URL, response headers)."""
        headers = {"Authorization": f"Bearer {self.token}"} if token == "mine" else {}
        url = self.url + path
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
                return r.status, r.read(), r.url, dict(r.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), url, dict(exc.headers)

    def post(self, path: str, payload: dict) -> dict:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(self.url + path, json.dumps(payload).encode(), headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def post_status(self, path: str, payload: dict) -> tuple[int, str]:
        """(status, body) of a POST that may be refused."""
        try:
            return 200, json.dumps(self.post(path, payload))
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


class RecordingServer:
    """An HTTP server on loopback that records every request and answers with a page that would script
    its viewer: what a run's conf could point the API server at (an internal service, a metadata
    endpoint)."""

    def __init__(self):
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                requests.append(self.path)
                body = b"<html><script>fetch('/api/v2/dags')</script>internal</html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def set_run_conf(env: dict[str, str], run_id: str, conf: dict) -> None:
    """Rewrite a run's conf in the metadata DB: a run made before its Params had a schema (or by a
    client that bypassed it) is still opened by the views."""
    import sqlalchemy as sa

    from colliderflow.progress import metadata_engine

    engine = metadata_engine(env)
    try:
        with engine.begin() as db:
            db.execute(
                sa.text("UPDATE dag_run SET conf = :c WHERE run_id = :r"),
                {"c": json.dumps(conf), "r": run_id},
            )
    finally:
        engine.dispose()


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
    roots = [*json.loads(env[data_roots.ENV]), "s3://runs"]  # the session's tmp roots and the s3 run's
    env.update({"COLLIDERFLOW_DATA": str(base / "data"), data_roots.ENV: json.dumps(roots), **s3})
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
        api.env, api.base = env, base
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


# --- the trust boundary: a run's conf reaches only the data roots; served files cannot script the origin


@pytest.fixture(scope="module")
def hostile(server):
    """Two runs whose conf points away from the data roots: one at an HTTP server on loopback that
    records requests (its conf written into the metadata DB, as by a run made before the Params had a
    schema), one at a local folder outside the roots that holds a report."""
    api, _, _ = server
    recorder = RecordingServer()
    elsewhere = pathlib.Path(tempfile.mkdtemp(prefix="cf-outside-the-roots-", dir="/var/tmp"))
    try:
        ssrf = api.post("/api/v2/dags/dl_trigger/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"]
        set_run_conf(api.env, ssrf, {"output_root": f"{recorder.url}/internal.txt?q="})
        far = api.post(
            "/api/v2/dags/dl_trigger/dagRuns", {"logical_date": None, "conf": {"output_root": str(elsewhere)}}
        )["dag_run_id"]
        write_run(elsewhere, "dl_trigger", far, {"qcd": 0.9, "ttbar": 0.9, "wjets": 0.9}, elsewhere)
        yield api, recorder, {"ssrf": ssrf, "far": far}
    finally:
        recorder.close()
        shutil.rmtree(elsewhere, ignore_errors=True)


def run_routes(run_id: str) -> list[str]:
    run = f"/colliderflow/runs/dl_trigger/{urllib.request.quote(run_id)}"
    return [f"{run}/report", f"{run}/files/report/report.html", f"{run}/files/report/summary.json",
            f"{run}/tasks/evaluate", f"{run}/tasks/collect_metrics"]  # fmt: skip


def test_a_run_cannot_make_the_api_server_fetch_an_address(hostile):
    """The SSRF of issue 27: an http(s) output_root is refused at trigger time (the Param's schema); a run
    that holds one anyway gets 403 on every results route and is left out of the trends, and the
    address it names never receives a request."""
    api, recorder, runs = hostile
    status, body = api.post_status(
        "/api/v2/dags/dl_trigger/dagRuns",
        {"logical_date": None, "conf": {"output_root": f"{recorder.url}/internal.txt?q="}},
    )
    assert status == 400 and "output_root" in body, (status, body[:500])
    for path in run_routes(runs["ssrf"]):
        status, body, _ = api.get(path)
        assert status == 403 and b"allowed data roots" in body and b"internal" not in body, (path, status)
    status, body, _ = api.get("/colliderflow/trends/dl_trigger")
    assert status == 200 and runs["ssrf"] not in body.decode()
    assert recorder.requests == [], f"the API server fetched a run-chosen address: {recorder.requests}"


def test_a_run_outside_the_data_roots_is_not_served(hostile):
    api, _, runs = hostile
    for path in run_routes(runs["far"]):
        status, body, _ = api.get(path)
        assert status == 403 and b"report of" not in body and b"/var/tmp" not in body, (path, status, body)
    status, body, _ = api.get("/colliderflow/trends/dl_trigger")
    assert status == 200 and runs["far"] not in body.decode()


def test_served_files_cannot_script_the_origin(server):
    """Every file of a run directory is sandboxed (an opaque origin: no cookie, no API call as the
    viewer) and never sniffed; HTML is shown sandboxed, SVG and XML are downloads; our own pages allow
    no script."""
    api, runs, _ = server
    run_id, directory = next(iter(runs.items()))
    (pathlib.Path(directory) / "report" / "x.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (pathlib.Path(directory) / "report" / "x.xml").write_text("<x/>")
    run = f"/colliderflow/runs/dl_trigger/{urllib.request.quote(run_id)}"
    for name in ("report.html", "summary.json", "x.svg", "x.xml"):
        status, _, _, headers = api.fetch(f"{run}/files/report/{name}")
        policy = headers["content-security-policy"]
        assert status == 200 and policy.startswith("sandbox;"), (name, headers)
        assert "allow-" not in policy and "script-src" not in policy and "default-src 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        attachment = "attachment" in headers.get("content-disposition", "")
        assert attachment == name.endswith((".svg", ".xml")), (name, headers)
    status, _, _, headers = api.fetch(f"{run}/tasks/evaluate")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    assert "sandbox" not in headers["content-security-policy"]  # ours: the PNGs it shows load with the login


def test_a_missing_file_is_named_relative_to_the_run_directory(server):
    api, runs, _ = server
    run_id = next(iter(runs))
    status, body, _ = api.get(
        f"/colliderflow/runs/dl_trigger/{urllib.request.quote(run_id)}/files/report/no.html"
    )
    detail = json.loads(body)["detail"]
    assert status == 404 and "'report/no.html'" in detail and "run directory" in detail
    assert str(api.base) not in detail and "/" not in detail.replace("report/no.html", ""), detail


def test_trends_plot_by_logical_date_with_partitions_and_the_cumulative_curve(server):
    """A March night's run plots in March (its logical date), names its partition, and the cumulative
    result's partition-by-partition figures (pairs so far, the Z peak with its error) are drawn and
    listed."""
    api, _, _ = server
    root = api.base / "dimuon-root"
    run = api.post("/api/v2/dags/cms_dimuon/dagRuns",
                   {"logical_date": "2026-03-01T02:00:00Z", "conf": {"output_root": str(root)}})  # fmt: skip
    directory = root / "cms_dimuon" / safe_path(run["dag_run_id"])
    (directory / "report").mkdir(parents=True)
    z = {"mass": 91.1, "width": 2.6, "mass_error": 0.12, "width_error": 0.1}
    figures = {
        "pairs": 700,
        "peaks": {"Z": z},
        "partitions": [{"key": "2026-03-01", "files": 2, "events": 9}],
    }
    (directory / "report" / "summary.json").write_text(
        json.dumps({"stages": {"dimuon": {"figures": figures}}})
    )
    so_far = [{"key": k, "so_far": {"events": 10 * n, "pairs": 700 * n, "peaks": {"Z": z}}}
              for n, k in enumerate(("2026-02-28", "2026-03-01"), start=1)]  # fmt: skip
    (root / "cms_dimuon" / "cumulative").mkdir(parents=True)
    (root / "cms_dimuon" / "cumulative" / "partitions.json").write_text(json.dumps({"partitions": so_far}))
    status, body, _ = api.get("/colliderflow/trends/cms_dimuon")
    page = body.decode()
    assert status == 200, page
    row = page[page.index(run["dag_run_id"]) - 300 : page.index(run["dag_run_id"]) + 300]
    assert "<td>2026-03-01</td>" in row and "<td>2026-03-01</td>" in row.split(run["dag_run_id"])[1]
    assert (
        "after each of its 2 partition(s)" in page and "91.100 ± 0.120" in page and "<td>1,400</td>" in page
    )
    assert page.count("data:image/png;base64,") >= 5  # pairs, Z position, width ... and the 3 cumulative
