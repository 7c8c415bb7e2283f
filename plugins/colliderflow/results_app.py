"""The results views, a FastAPI app the Airflow API server serves under /colliderflow (registered by
plugins/colliderflow_plugin.py): a run's report, a stage's output (key figures, plots, files) and a
DAG's nightly trends, for runs on any store.

Security: Airflow does not authenticate a plugin's routes. Every route here depends on
`requires_access_dag("GET", DagAccessEntity.RUN)`, the check Airflow's own DAG-run API uses: the caller's
UI session (the JWT cookie) or bearer token must belong to a user who may read that DAG's runs;
anyone else gets 401/403. Files are served only from the run directory of an existing run of that DAG,
by relative paths that cannot leave it (colliderflow.run_files), and only when that directory lies
inside the allowed data roots (colliderflow.data_roots; else 403 before any I/O on it): a run's conf
never makes the API server fetch an address of its choosing.

What a run directory holds was written by jobs a run's conf steered, so no served file may script
Airflow's origin (where the viewer's token cookie lives): each carries `Content-Security-Policy:
sandbox` (an opaque origin, no scripts) and `nosniff`; HTML (the run report, which needs no script)
is shown sandboxed, anything but images and plain text is a download. Our own pages allow no script
either. Error bodies name files relative to the run directory, never a server path."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from colliderflow import data_roots, run_files, trends
from colliderflow.assets import output_figures
from colliderflow.run_files import NotFound, Refused

_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)


def _page(title: str, template: str, **values: Any) -> str:
    body = Markup(_env.get_template(template).render(**values))
    return _env.get_template("page.html.j2").render(title=title, body=body)


def _can_read_runs():
    """Airflow's own check for reading a DAG's runs (dag_id from the path), from the API server."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", DagAccessEntity.RUN))


# every response of ours: no script, no plugin, nothing loaded from elsewhere, no form posted
CONTENT_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
# our pages: framed by Airflow's UI only
PAGE_POLICY = f"{CONTENT_POLICY}; frame-ancestors 'self'"
# every file of a run directory: an opaque origin besides (no cookie, no API call as the viewer)
FILE_POLICY = f"sandbox; {CONTENT_POLICY}"
# shown in the tab (sandboxed); every other type is served as a download
INLINE_TYPES = ("text/html", "text/plain", "text/csv", "application/json", "image/png", "image/jpeg",
                "image/gif", "image/webp", "application/pdf")  # fmt: skip


def _run(dag_id: str, run_id: str) -> run_files.Run:
    """The run, if its directory may be opened: 404 for no such run, 403 (before any I/O on it) for a
    directory outside the allowed data roots."""
    try:
        run = run_files.the_run(dag_id, run_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if data_roots.outside_roots(run.directory):
        raise HTTPException(403, f"run {run_id!r} lies outside the allowed data roots: none of it is served")
    return run


def _file_response(path: str, data: bytes) -> Response:
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"Content-Security-Policy": FILE_POLICY, "X-Content-Type-Options": "nosniff"}
    if kind not in INLINE_TYPES:
        name = path.rsplit("/", 1)[-1].encode("ascii", "replace").decode().replace('"', "_")
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=kind, headers=headers)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


def _figures(run: run_files.Run, folder: str) -> dict[str, str]:
    """The key figures of a stage folder (colliderflow.assets.output_figures), as table cells."""
    found = output_figures(f"{run.directory}/{folder}")
    return {k: json.dumps(v) if isinstance(v, dict) else _fmt(v) for k, v in found.items()}


def create_app() -> FastAPI:
    app = FastAPI(title="colliderflow results", dependencies=[_can_read_runs()])

    @app.middleware("http")
    async def no_script(request, call_next):  # noqa: ANN001, ANN202 - Starlette's middleware signature
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/runs/{dag_id}/{run_id}/report")
    def report(dag_id: str, run_id: str) -> Response:
        _run(dag_id, run_id)
        return RedirectResponse("files/report/report.html", status_code=307)  # relative: behind any prefix

    @app.get("/runs/{dag_id}/{run_id}/files/{path:path}")
    def file(dag_id: str, run_id: str, path: str) -> Response:
        run = _run(dag_id, run_id)
        try:
            data = run_files.open_file(run.directory, path)
        except Refused as exc:
            raise HTTPException(403, str(exc)) from None
        except NotFound as exc:
            raise HTTPException(404, f"{exc} (the stage may not have written it yet)") from None
        return _file_response(path, data)

    @app.get("/runs/{dag_id}/{run_id}/tasks/{task_id}", response_class=HTMLResponse)
    def stage(dag_id: str, run_id: str, task_id: str) -> str:
        run = _run(dag_id, run_id)
        folder = run_files.TASK_OUTPUTS.get(task_id)
        files = run_files.list_folder(run.directory, folder) if folder else []
        figures = _figures(run, folder) if (folder and f"{folder}/_metrics.json" in dict(files)) else {}
        pngs = [name for name, _ in files if name.endswith(".png") and name.count("/") == 1]
        return _page(f"{dag_id} / {run_id} / {task_id}", "stage.html.j2", folder=folder, files=files,
                     folder_url=f"{run.directory}/{folder}", figures=figures, pngs=pngs)  # fmt: skip

    @app.get("/trends/{dag_id}", response_class=HTMLResponse)
    def trend(dag_id: str) -> str:
        roots = data_roots.allowed_roots()
        runs = [r for r in run_files.find_runs(dag_id) if not data_roots.outside_roots(r.directory, roots)]
        rows = trends.trend_rows(dag_id, runs)
        pngs = [
            png for panel in trends.PANELS.get(dag_id, []) if (png := trends.plot_png(dag_id, rows, panel))
        ]
        so_far = trends.cumulative_rows(dag_id, runs)
        pngs += [png for key in trends.CUMULATIVE if (png := trends.cumulative_png(so_far, key))]
        titles = {k: v[0] for k, v in trends.FIGURES.get(dag_id, {}).items()}
        return _page(f"{dag_id}: nightly trends", "trends.html.j2", rows=rows, pngs=pngs, keys=list(titles),
                     titles=titles, dag_id=dag_id, fmt=_fmt, so_far=so_far)  # fmt: skip

    return app
