"""The trigger forms in a real browser: Debian's chromium driven by Playwright against `airflow
standalone` started by `make airflow`'s launcher, as a new user meets it. On a fresh install (no
samples yet) unpausing the DAGs gives scheduled runs that skip their stages instead of failing; after
the demo samples exist where the defaults point, each DAG's form opens ready (Trigger enabled, every
Param titled, described, in its section), its defaults submitted reach success in the grid; a bad
Spark master typed in is named by the form. Screenshots: $COLLIDERFLOW_UI_ARTIFACTS, else the test's
temporary directory (printed)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from colliderflow import environment
from colliderflow.dagkit import safe_path
from tests.dags.conftest import airflow, free_port, http_ok, stop_standalone, wait_for

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-gpu"]  # fmt: skip
DAGS = ("cms_dimuon", "dl_trigger")
# the first task that reads input: skipped by a scheduled run that finds none
FIRST_STAGE = {"cms_dimuon": "dimuon", "dl_trigger": "ingest"}
# both runs together, on a 2-core machine shared with other work
RUN_TIMEOUT_S = 900
# a sample of `make demo`'s size for dl_trigger (QCD's ~6 % isolated-lepton rate leaves ~570 events per
# class, ~1,200 for training): the form's defaults must learn on it, or the quality gate fails the run
NANOAOD_EVENTS, DELPHES_EVENTS = 60_000, 10_000


class Airflow:
    """A running `airflow standalone`: its UI address, its environment, its REST API."""

    def __init__(self, url: str, env: dict[str, str], data: str):
        self.url, self.env, self.data = url, env, data
        self._token: str | None = None

    def api(self, path: str):
        if self._token is None:
            body = json.dumps({"username": "admin", "password": "admin"}).encode()
            req = urllib.request.Request(f"{self.url}/auth/token", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self._token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, payload: dict) -> dict:
        self.api("/api/v2/version")  # a token first
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        req = urllib.request.Request(f"{self.url}{path}", json.dumps(payload).encode(), headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def runs(self, dag_id: str) -> list[dict]:
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]

    def params(self, dag_id: str) -> dict[str, dict]:
        """The DAG's Params as the server hands them to the form: {name: {value, description, schema}}."""
        return self.api(f"/api/v2/dags/{dag_id}/details")["params"]


def generate_demo_samples(data: str) -> None:
    """What `make demo` writes under its directory, at test size (same generator, same layout)."""
    from jobs.generate import delphes, nanoaod

    nanoaod.generate(events=NANOAOD_EVENTS, output=f"{data}/samples/nanoaod", files=3, seed=7)
    delphes.generate(events=DELPHES_EVENTS, output=f"{data}/samples/delphes", files=2, seed=8)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> str:
    path = os.environ.get("COLLIDERFLOW_UI_ARTIFACTS") or str(tmp_path_factory.mktemp("ui-artifacts"))
    os.makedirs(path, exist_ok=True)
    yield path
    print(f"\n[ui] screenshots in {path}")


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    """A fresh install: standalone on an empty data directory, both DAGs unpaused (their scheduled runs
    find no input); once those runs are done, the demo samples appear where the defaults point."""
    base = tmp_path_factory.mktemp("ui")
    data = str(base / "data")
    env = environment.airflow_env(home=str(base / "home"))
    port = free_port()
    env.update(
        {"COLLIDERFLOW_DATA": data, "COLLIDERFLOW_SPARK_DRIVER_MEMORY": "1g", "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    log = open(base / "standalone.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "colliderflow.standalone", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ui = Airflow(f"http://127.0.0.1:{port}", env, data)
    try:
        wait_for(lambda: http_ok(f"{ui.url}/api/v2/monitor/health"), 420, "the api-server", proc)
        cli_env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{ui.url}/execution/"}
        assert airflow(cli_env, "dags", "reserialize").returncode == 0
        for dag_id in DAGS:
            assert airflow(cli_env, "dags", "unpause", dag_id).returncode == 0
        finished = lambda: all(  # noqa: E731
            any(r["run_type"] == "scheduled" and r["state"] in ("success", "failed") for r in ui.runs(d))
            for d in DAGS
        )
        wait_for(finished, 300, "the scheduled runs created on unpausing", proc)
        generate_demo_samples(data)
        yield ui
    finally:
        stop_standalone(proc)
        log.close()


@pytest.fixture(scope="module")
def page(airflow_ui):
    """A logged-in chromium page (admin / admin, the launcher's login)."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(airflow_ui.url + "/", wait_until="networkidle")
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill("admin")
        page.locator("button[type=submit]").click()
        page.get_by_test_id("nav-sidebar").wait_for()
        yield page
        browser.close()


def open_form(page, ui: Airflow, dag_id: str):
    page.goto(f"{ui.url}/dags/{dag_id}", wait_until="networkidle")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Input", exact=True).wait_for()
    return dialog


def grid_state(page, run_id: str, task_id: str | None = None) -> str | None:
    """The state the grid's tooltip shows for a run (its bar) or for one of its tasks (its cell)."""
    page.mouse.move(1, 1)  # close any open tooltip
    if task_id is None:
        target = page.locator(f'div[data-run-id="{run_id}"]:not([data-task-id]) a').first
        label = f"Run ID: {run_id}"
    else:
        target = page.get_by_test_id(f"grid-{run_id}-{task_id}")
        label = f"Task ID: {task_id}"
    target.hover()
    tip = page.get_by_text(label).last
    tip.wait_for(timeout=10_000)
    text = tip.evaluate("e => (e.closest('[data-part=content]') || e.parentElement).innerText")
    found = re.search(r"State: (\w[\w ]*)", text)
    return found.group(1).strip() if found else None


def watch_run(page, ui: Airflow, dag_id: str, run_id: str, timeout: float) -> str:
    """Poll the DAG's grid until the run's bar says it finished; its final state."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        page.goto(f"{ui.url}/dags/{dag_id}", wait_until="networkidle")
        state = grid_state(page, run_id)
        if state in ("Success", "Failed"):
            return state
        time.sleep(5)
    raise AssertionError(f"{dag_id} {run_id} still {state} in the grid after {timeout:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("dag_id", DAGS)
def test_scheduled_run_without_input_skips(page, airflow_ui, dag_id, artifacts):
    """Unpaused on a fresh install, the DAG's scheduled run finds no input: success, its stages skipped."""
    (run,) = [r for r in airflow_ui.runs(dag_id) if r["run_type"] == "scheduled"]
    page.goto(f"{airflow_ui.url}/dags/{dag_id}", wait_until="networkidle")
    assert grid_state(page, run["dag_run_id"]) == "Success"
    assert grid_state(page, run["dag_run_id"], "check_inputs") == "Success"
    assert grid_state(page, run["dag_run_id"], FIRST_STAGE[dag_id]) == "Skipped"
    page.screenshot(path=f"{artifacts}/{dag_id}-scheduled-skip.png")


def check_form_and_trigger(page, ui: Airflow, dag_id: str, artifacts: str) -> str:
    """Open the DAG's form: Trigger enabled at once, each section shows its Params' titles and
    descriptions; submit the defaults. Returns the new run's id."""
    dialog = open_form(page, ui, dag_id)
    trigger = dialog.get_by_role("button", name="Trigger")
    assert trigger.is_enabled(), f"{dag_id}: the form opened in an error state"
    shown = {k: p for k, p in ui.params(dag_id).items() if "const" not in p["schema"]}  # const: hidden
    for section in dict.fromkeys(p["schema"]["section"] for p in shown.values()):
        dialog.get_by_text(section, exact=True).click()  # the form opens one section at a time
        for name, p in shown.items():
            if p["schema"]["section"] == section:
                label = dialog.locator("label", has_text=p["schema"]["title"]).first
                assert label.is_visible(), (dag_id, name, "title")
                assert dialog.get_by_text(p["description"], exact=True).is_visible(), (dag_id, name)
        if section == "Input":
            page.screenshot(path=f"{artifacts}/{dag_id}-form.png", full_page=True)
    assert dialog.get_by_text("This field is required").count() == 0
    trigger.click()
    page.wait_for_url(re.compile(rf"/dags/{dag_id}/runs/manual__"))
    return urllib.request.unquote(page.url.rstrip("/").rsplit("/runs/", 1)[1])


@pytest.mark.slow
def test_forms_open_ready_and_their_defaults_run_to_success(page, airflow_ui, artifacts):
    """Both forms submitted with their defaults, one after the other; then both runs watched in the grid
    (they run side by side, as a user's would)."""
    runs = {dag_id: check_form_and_trigger(page, airflow_ui, dag_id, artifacts) for dag_id in DAGS}
    for dag_id, run_id in runs.items():
        state = watch_run(page, airflow_ui, dag_id, run_id, RUN_TIMEOUT_S)
        page.screenshot(path=f"{artifacts}/{dag_id}-grid.png", full_page=True)
        assert state == "Success", f"{dag_id} {run_id}: {state} (see {artifacts}/{dag_id}-grid.png)"
        run_dir = os.path.join(airflow_ui.data, "runs", dag_id, safe_path(run_id))
        assert os.path.exists(os.path.join(run_dir, "report", "_SUCCESS")), run_dir
        # the run's report in its own tab of the run page (the colliderflow plugin's external view)
        page.goto(
            f"{airflow_ui.url}/dags/{dag_id}/runs/{urllib.request.quote(run_id)}/plugin/colliderflow_report"
        )
        report = page.frame_locator("iframe").first
        report.get_by_text(f"{dag_id} — {run_id}").wait_for()
        page.screenshot(path=f"{artifacts}/{dag_id}-report-tab.png", full_page=True)
        # served sandboxed (no script, an opaque origin), the report still shows its plots
        images = report.locator("img")
        assert images.count() >= 1
        assert all(
            images.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(images.count())
        )


@pytest.mark.slow
def test_bad_spark_master_is_named_by_the_form(page, airflow_ui, artifacts):
    dialog = open_form(page, airflow_ui, "cms_dimuon")
    dialog.get_by_text("Spark", exact=True).click()
    dialog.locator("#element_spark_master").fill("mesos://master:5050")
    before = len(airflow_ui.runs("cms_dimuon"))
    dialog.get_by_role("button", name="Trigger").click()
    # Airflow 3.3's form does not check a text field's pattern itself: the server's refusal is shown in
    # the dialog's error box, naming the Param (its key and, in the schema, its title) and the value
    message = dialog.get_by_text(re.compile("Invalid input for param spark_master"))
    message.wait_for()
    page.screenshot(path=f"{artifacts}/cms_dimuon-bad-spark-master.png", full_page=True)
    text = message.inner_text()
    assert "Spark master" in text and "mesos://master:5050" in text, text
    assert len(airflow_ui.runs("cms_dimuon")) == before, "a run was created despite the bad value"


def set_datetime(page, dialog, which: int, date: str, time_of_day: str) -> None:
    """Fill the backfill dialog's From (0) or To (1) picker: its popover has a date and a time field."""
    dialog.get_by_test_id("datetime-input").nth(which).click()
    page.get_by_placeholder("YYYY/MM/DD").last.fill(date)
    page.get_by_placeholder("HH:mm").last.fill(time_of_day)
    dialog.get_by_text("Date Range", exact=True).click()  # closes the popover, not the dialog


@pytest.mark.slow
def test_a_ui_backfill_without_recorded_partitions_is_refused_in_one_line(page, airflow_ui, artifacts):
    """Airflow 3.3's Backfill dialog over two nights that recorded no partition, "Override parameters"
    left unticked (the dialog then drops the form's Params): the runs read nothing. Each fails at its
    `partition` task with one line naming the night's missing partition, instead of silently reading
    the default input."""
    dialog = open_form(page, airflow_ui, "cms_dimuon")
    dialog.get_by_text("Backfill", exact=True).first.click()
    set_datetime(page, dialog, 0, "2026/03/01", "00:00")
    set_datetime(page, dialog, 1, "2026/03/02", "02:00")
    page.screenshot(path=f"{artifacts}/cms_dimuon-backfill-dialog.png", full_page=True)
    dialog.get_by_role("button", name="Run Backfill").click()
    backfills = lambda: [r for r in airflow_ui.runs("cms_dimuon") if r["run_type"] == "backfill"]  # noqa: E731
    wait_for(lambda: len(backfills()) == 2 and all(r["state"] in ("success", "failed") for r in backfills()),
             RUN_TIMEOUT_S, "the two backfill runs")  # fmt: skip
    assert {r["state"] for r in backfills()} == {"failed"}, backfills()
    logs = pathlib.Path(airflow_ui.env["AIRFLOW_HOME"]) / "logs" / "dag_id=cms_dimuon"
    for run in backfills():
        night = run["logical_date"][:10]
        (log,) = (logs / f"run_id={run['dag_run_id']}" / "task_id=partition").glob("attempt=*.log")
        assert f"partition {night}: is not recorded under" in log.read_text(), log
        assert not os.path.exists(
            os.path.join(airflow_ui.data, "runs", "cms_dimuon", safe_path(run["dag_run_id"]))
        )


def active_backfills(ui: Airflow, dag_id: str) -> list[dict]:
    """The DAG's backfills the scheduler has not yet marked complete (a new one is refused meanwhile)."""
    return [b for b in ui.api(f"/api/v2/backfills?dag_id={dag_id}")["backfills"] if not b.get("completed_at")]


@pytest.mark.slow
def test_a_ui_backfill_with_override_reprocesses_the_recorded_night(page, airflow_ui, artifacts):
    """A night recorded by a run triggered through the REST API (its own input folder, one file), then
    the Backfill dialog over that night with "Override parameters on existing runs" ticked and that
    input typed into the form: the backfill run reads exactly the file the night recorded, although
    another file has arrived in the folder since."""
    samples = sorted(pathlib.Path(airflow_ui.data, "samples", "nanoaod").glob("*.root"))
    folder = pathlib.Path(airflow_ui.data, "samples", "night5")
    folder.mkdir()
    shutil.copy(samples[0], folder / samples[0].name)
    conf = {"input": [str(folder)]}
    night = airflow_ui.post(
        "/api/v2/dags/cms_dimuon/dagRuns", {"logical_date": "2026-03-05T12:00:00Z", "conf": conf}
    )

    def state() -> str:
        return next(
            r["state"] for r in airflow_ui.runs("cms_dimuon") if r["dag_run_id"] == night["dag_run_id"]
        )

    wait_for(lambda: state() in ("success", "failed"), RUN_TIMEOUT_S, "the night of 2026-03-05")
    assert state() == "success"
    shutil.copy(samples[1], folder / samples[1].name)  # arrives after the night: the backfill leaves it
    # Airflow runs one backfill of a DAG at a time: the earlier one must be marked complete first
    wait_for(lambda: not active_backfills(airflow_ui, "cms_dimuon"), RUN_TIMEOUT_S, "the earlier backfill")
    dialog = open_form(page, airflow_ui, "cms_dimuon")
    dialog.get_by_text("Backfill", exact=True).first.click()
    set_datetime(page, dialog, 0, "2026/03/05", "00:00")
    set_datetime(page, dialog, 1, "2026/03/05", "02:00")
    dialog.get_by_text("Override parameters on existing runs").click()
    if not dialog.locator("#element_input").is_visible():
        dialog.get_by_text("Input", exact=True).click()  # the section opens on a click
    dialog.locator("#element_input").fill(str(folder))
    page.screenshot(path=f"{artifacts}/cms_dimuon-backfill-override.png", full_page=True)
    dialog.get_by_role("button", name="Run Backfill").click()

    def mine() -> list[dict]:
        runs = airflow_ui.runs("cms_dimuon")
        return [r for r in runs if r["run_type"] == "backfill" and r["logical_date"].startswith("2026-03-05")]

    wait_for(lambda: len(mine()) == 1 and mine()[0]["state"] in ("success", "failed"), RUN_TIMEOUT_S,
             "the backfill of 2026-03-05")  # fmt: skip
    (run,) = mine()
    assert run["state"] == "success", run
    metrics = pathlib.Path(
        airflow_ui.data, "runs", "cms_dimuon", safe_path(run["dag_run_id"]), "dimuon", "_metrics.json"
    )
    assert set(json.loads(metrics.read_text())["files"]) == {str(folder / samples[0].name)}


def choose_option(page, dialog, title: str, option: str) -> None:
    """Pick `option` in the form's dropdown labelled `title` (an enum Param with values_display)."""
    box = dialog.get_by_role("combobox", name=title)
    if box.count() == 0:
        box = dialog.locator("label", has_text=title).locator("xpath=..").get_by_role("combobox")
    box.first.click()
    page.get_by_role("option", name=option).click()


@pytest.mark.slow
def test_a_named_partition_from_the_form_reprocesses_exactly_its_files(page, airflow_ui, artifacts):
    """The trigger form with *Data to process* = Named partitions, the night recorded by the test
    above (2026-03-05) and its input folder: the run reads exactly the one file that partition
    recorded, not the two the folder now holds."""
    folder = pathlib.Path(airflow_ui.data, "samples", "night5")
    recorded = sorted(folder.glob("*.root"))[0]
    dialog = open_form(page, airflow_ui, "cms_dimuon")
    if not dialog.locator("#element_input").is_visible():
        dialog.get_by_text("Input", exact=True).click()
    choose_option(page, dialog, "Data to process", "Named partitions")
    dialog.locator("#element_partition_keys").fill("2026-03-05")
    dialog.locator("#element_input").fill(str(folder))
    page.screenshot(path=f"{artifacts}/cms_dimuon-named-partition.png", full_page=True)
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url(re.compile(r"/dags/cms_dimuon/runs/manual__"))
    run_id = urllib.request.unquote(page.url.rstrip("/").rsplit("/runs/", 1)[1])
    assert watch_run(page, airflow_ui, "cms_dimuon", run_id, RUN_TIMEOUT_S) == "Success"
    metrics = pathlib.Path(
        airflow_ui.data, "runs", "cms_dimuon", safe_path(run_id), "dimuon", "_metrics.json"
    )
    assert set(json.loads(metrics.read_text())["files"]) == {str(recorded)}
