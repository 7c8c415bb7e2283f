"""The allowed data roots: where runs may read and write. A run's conf chooses its inputs and its
output_root, but only inside roots the deployment names, never the run: the data root
(dagkit.data_root: the embedded default's data directory, a chart's storage root), plus the roots in
COLLIDERFLOW_ALLOWED_ROOTS (an environment variable the operator sets) and in the Airflow Variable
colliderflow_allowed_roots (each a JSON list or a comma-separated list of paths and URLs).

The first task of every DAG refuses a run whose paths leave them (colliderflow.inputs), and the results
views never open a run directory outside them (colliderflow.results_app): a run cannot make a task or
the API server read any address it can reach. The check is on the spelling first (no I/O on a place
a run chose), then, for a local path inside a root, on where its symlinks lead."""

from __future__ import annotations

import json
import logging
import os
import sys

from colliderflow.dagkit import data_root
from jobs.core.locations import Location, NotALocation, lexical, local_path, resolved

log = logging.getLogger(__name__)

ENV = "COLLIDERFLOW_ALLOWED_ROOTS"
VARIABLE = "colliderflow_allowed_roots"
HOW_TO_ADD = f"an operator adds one with {ENV} or the Airflow Variable {VARIABLE}"
# how much of the value, the problem and the root list a one-line error shows (under 500 in all)
_SHOWN = {"value": 100, "problem": 80, "roots": 160}


def parse_roots(text: str | None) -> list[str]:
    """Roots from a JSON list or a comma-separated list (blank entries dropped)."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return [str(root).strip() for root in json.loads(text) if str(root).strip()]
        except ValueError:
            log.warning("%s is not a JSON list of roots; ignored", text[:80])
            return []
    return [root.strip() for root in text.split(",") if root.strip()]


def _variable() -> str | None:
    """The Airflow Variable, read the way the current process may: through the Task SDK inside a task,
    from the metadata DB in the API server; None where neither answers."""
    try:
        if hasattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS"):
            from airflow.sdk import Variable

            return Variable.get(VARIABLE, default=None)
        from airflow.models.variable import Variable

        return Variable.get(VARIABLE, default_var=None)
    except Exception as exc:  # noqa: BLE001 - no Variable store here (a plain script): env roots only
        log.debug("the Variable %s could not be read: %s", VARIABLE, exc)
        return None


def allowed_roots() -> list[str]:
    """The data root, then the operator's roots from the environment and the Variable."""
    roots = [data_root(), *parse_roots(os.environ.get(ENV)), *parse_roots(_variable())]
    return list(dict.fromkeys(roots))


def _root_locations(roots: list[str]) -> list[tuple[Location, Location]]:
    """Each usable root as spelled and as resolved (a local root reached through a symlink matches
    either way); a root that names no supported store is logged and left out."""
    found = []
    for root in roots:
        try:
            found.append((lexical(root), resolved(root)))
        except NotALocation as exc:
            log.warning("allowed data root %r ignored: %s", root, exc)
    return found


def outside_roots(url: str, roots: list[str] | None = None) -> str | None:
    """Why `url` is not inside an allowed root, or None when it is. Only the spelling is read until it
    is known to lie inside a root; then a local path's symlinks must not lead out of that root."""
    try:
        if lexical(url).store == "file" and not os.path.isabs(local_path(url)):
            return "not an absolute path or URL"
        target = lexical(url)
    except NotALocation as exc:
        return str(exc)
    locations = _root_locations(allowed_roots() if roots is None else roots)
    inside = [real for spelled, real in locations if target.within(spelled) or target.within(real)]
    if not inside:
        return "outside the allowed data roots"
    if target.store == "file" and not any(resolved(url).within(real) for real in inside):
        return "leads out of the allowed data roots through a symlink"
    return None


def refusal(param: str, url: str, roots: list[str] | None = None) -> str | None:
    """One line naming the Param, its value and the allowed roots, or None when `url` is allowed."""
    roots = allowed_roots() if roots is None else roots
    problem = outside_roots(url, roots)
    if problem is None:
        return None
    value, listed = _cut(url, _SHOWN["value"]), _cut(", ".join(roots), _SHOWN["roots"])
    return f"{param}={value!r}: {_cut(problem, _SHOWN['problem'])} ({listed}); {HOW_TO_ADD}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
