"""The first task of every DAG: are the run's inputs there? A scheduled or backfill run whose input
matches no file is skipped, every task with it, after one log line naming the Param and the path: a
nightly run on a fresh install, or before the night's files have arrived, is nothing to retry or
page about. A run triggered by hand fails at once on the same line, without retries (a retry would
not create the files).

    check = check_inputs({"input": "{{ params.input | tojson }}"})
"""

from __future__ import annotations

import difflib
import logging

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk.exceptions import AirflowFailException

from colliderflow.backends import configured_backend
from colliderflow.stages import values_of

log = logging.getLogger(__name__)

TASK_ID = "check_inputs"
# run types that wait for data rather than ask for it
SKIPPED_RUN_TYPES = ("scheduled", "backfill")
HINT = "`make demo` writes the demo samples the defaults point at; or trigger with your own input"


def missing_input(param: str, value: str) -> str | None:
    """Why the Param's value (a JSON list of paths, globs, directories or URLs) finds no ROOT file,
    or None when every entry finds one."""
    from jobs.core.errors import BadInputError
    from jobs.core.listing import expand_inputs

    patterns = values_of(value)
    if not patterns:
        return f"{param} is empty"
    for pattern in patterns:
        try:
            expand_inputs([pattern], suffix=".root")
        except BadInputError as exc:
            return f"{param}: {exc}"
        except ImportError:  # a URL scheme whose filesystem is not installed here: the stage checks it
            continue
    return None


def run_type() -> str:
    from airflow.sdk import get_current_context

    kind = get_current_context()["dag_run"].run_type
    return str(getattr(kind, "value", kind))


def outside_roots(inputs: dict[str, str], output_root: str) -> list[str]:
    """One line per Param value that leaves the allowed data roots (colliderflow.data_roots): the
    output root and each input path or URL."""
    from colliderflow.data_roots import allowed_roots, refusal

    roots = allowed_roots()
    values = [("output_root", output_root)] + [(k, path) for k, v in inputs.items() for path in values_of(v)]
    return [line for param, value in values if (line := refusal(param, value, roots))]


def unknown_conf_keys() -> list[str]:
    """A line naming the run's conf keys that are no Param of the DAG (a typo such as `chunk_entrys`
    was silently ignored, the run taking the default), with the nearest Param; [] outside a run."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # noqa: BLE001 - called outside a task (a test, a script): nothing to check
        return []
    known = set(context["task"].dag.params)  # the declared ones: the run's params hold its conf too
    unknown = sorted(set(context["dag_run"].conf or {}) - known)
    if not unknown:
        return []
    hints = [
        f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k for k in unknown
    ]
    return [f"unknown conf key(s): {', '.join(hints)}; the DAG's Params are listed in its trigger form"]


def inputs_present(inputs: dict[str, str], generated: str = "False", output_root: str = "") -> bool:
    """ShortCircuit condition: True when the stages may start. First, every path the run names must lie
    inside the allowed data roots (a refusal fails the run, never retried). `generated` ("True") means
    the run makes its own sample (dl_trigger's demo mode), so there is nothing to look for. On
    Kubernetes a run root the pods cannot share fails the run here, before any stage starts."""
    refused = unknown_conf_keys() + outside_roots({} if generated == "True" else inputs, output_root)
    if refused:
        raise AirflowFailException("; ".join(refused))
    if configured_backend() == "kubernetes":
        from colliderflow.backends.kubernetes.config import KubernetesConfig

        problem = KubernetesConfig.load().run_root_problem(output_root) if output_root else None
        if problem:
            raise AirflowFailException(problem)
    if generated == "True":
        log.info("the run generates its own sample; inputs not checked")
        return True
    if configured_backend() == "kubernetes":
        log.info("inputs are checked by the stages themselves on Kubernetes (their volumes, not ours)")
        return True
    problems = [p for p in (missing_input(k, v) for k, v in inputs.items()) if p]
    if not problems:
        log.info("inputs found: %s", ", ".join(inputs))
        return True
    line = "; ".join(problems) + f" ({HINT})"
    kind = run_type()
    if kind in SKIPPED_RUN_TYPES:
        log.warning("no input, skipping this %s run: %s", kind, line)
        return False
    raise AirflowFailException(line)


def check_inputs(inputs: dict[str, str], generated: str = "False") -> ShortCircuitOperator:
    """The check as a task; `inputs` maps each input Param's name to its (templated) value, a list
    Param as JSON (`{{ params.input | tojson }}`)."""
    return ShortCircuitOperator(
        task_id=TASK_ID,
        python_callable=inputs_present,
        op_kwargs={"inputs": inputs, "generated": generated, "output_root": "{{ params.output_root }}"},
        retries=0,
    )
