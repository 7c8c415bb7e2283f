"""The task after check_inputs: which partitions this run processes (jobs.core.partitions). The
manifests' URLs it hands on (XCom `manifests`) are what the stages read (`--manifest`, one per
partition), so no stage lists an input on its own, on any backend. With nothing to process the stage
right after it is skipped (and what depends on it): a night with nothing new ends `success` after one
log line saying so; the cumulative sum still runs, which brings it up to date if an earlier run was
killed while writing it.

Where it runs: on the local backend in the Airflow worker, which asks Airflow whether the run owning an
unfinished partition still runs. On Kubernetes Airflow holds no storage credentials, so it is a pod
(`python -m jobs.partition`, its decision returned through the pod's XCom file); the pod cannot ask
Airflow, so it takes over another run's unfinished partition once its claim is 12 hours old. Either way
a partition processed twice counts once (the latest result of a key).

What a run takes is decided by its kind, then its Params:
- a scheduled run, `airflow dags test` and a triggered run with Take = new: its own partitions (a
  retry keeps them), those of failed runs, and the files no partition holds, claimed as the night's;
- Take = all: the same, plus every finished partition: everything, each file once;
- Take = named: the partitions named in Partition keys (a key, or a group such as `Run2012B`);
- a backfill run: the partition recorded for its night, and only it. Its Params cannot change which
  files it reads: a night with no partition, or recorded for other inputs, refuses the run in one line.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk.exceptions import AirflowFailException

from colliderflow.backends import configured_backend
from colliderflow.stages import Stage, each, values_of

log = logging.getLogger(__name__)

TASK_ID = "partition"
LIVE_STATES = ("queued", "running")
KEYS_XCOM = "partition_keys"
SOURCE_XCOM = "source_manifest"
MANIFESTS_XCOM = "manifests"


def is_live(dag_id: str, own_run: str):
    """Whether another run of the DAG still runs (its partitions are its own to finish)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def live(run_id: str) -> bool:
        if not run_id or run_id == own_run:
            return False
        try:
            state = RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)
        except Exception:  # noqa: BLE001 - a run deleted from the metadata DB is not running
            return False
        return str(getattr(state, "value", state)) in LIVE_STATES  # a DagRunState, whose str() is its name

    return live


def choose(inputs: dict[str, str], output_root: str, take: str, keys: str, scheme: str, night: str,
           backfill: str = "False") -> list[str]:  # fmt: skip
    """ShortCircuit condition: the manifests of the partitions this run processes ([] skips the stage)."""
    from airflow.sdk import get_current_context

    from jobs.core.errors import BadInputError, UsageError
    from jobs.core.partitions import Source, partitions_root, plan_run

    context = get_current_context()
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    source = Source({name: values_of(v) for name, v in inputs.items()}, output_root.rstrip("/"))
    try:
        plan = plan_run(partitions_root(output_root, dag_id), source, run_id, night, take=take,
                        names=values_of(keys), scheme=scheme, is_live=is_live(dag_id, run_id))  # fmt: skip
    except (BadInputError, UsageError) as exc:
        hint = " (a backfill reprocesses the partitions its nights recorded)" if backfill == "True" else ""
        raise AirflowFailException(f"{exc}{hint}") from None
    for note in plan.notes:
        log.warning("%s", note)
    hand_on(context["ti"], plan.manifests, [p.key for p in plan.partitions], plan.latest)
    if not plan.partitions:
        say_nothing_new(source.inputs)
    for p in plan.partitions:
        log.info("partition %s: %d file(s), claimed by %s (%s)", p.key, len(p.files), p.owner, p.manifest)
    return plan.manifests


def hand_on(ti: Any, manifests: list[str], keys: list[str], latest: str | None) -> None:
    """The XComs the later tasks read: the manifests, their keys, the source's newest manifest."""
    ti.xcom_push(MANIFESTS_XCOM, manifests)
    ti.xcom_push(KEYS_XCOM, keys)
    ti.xcom_push(SOURCE_XCOM, latest)


def say_nothing_new(inputs: dict[str, list[str]]) -> None:
    where = ", ".join(v for vs in inputs.values() for v in vs)
    log.info("nothing new under %s since the last partition: the stages are skipped", where)


class HandOn:
    """post_execute of the partition pod (Kubernetes): its decision (the pod's XCom file) handed on
    as the same XComs as on the local backend; with nothing to process the task is skipped, and with
    it the stage after it (the cumulative sum still runs)."""

    def __call__(self, context: dict, result: Any = None) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        decision = result if isinstance(result, dict) else {}
        for note in decision.get("notes") or []:
            log.warning("%s", note)
        hand_on(
            context["ti"], decision.get("manifests") or [], decision.get("keys") or [], decision.get("latest")
        )
        if not decision.get("manifests"):
            raise AirflowSkipException("nothing new since the last partition: the stages are skipped")


# Jinja: the run's night (its partition key, else the date of its logical date or of when it ran), and
# what a backfill takes whatever its Params say: the partition of its night
NIGHT = "(dag_run.partition_key or (dag_run.logical_date or dag_run.run_after).strftime('%Y-%m-%d'))"
BACKFILL = "(dag_run.run_type == 'backfill')"
TAKE = f"{{{{ 'named' if {BACKFILL} else params.take }}}}"
KEYS = f"([{NIGHT}] if {BACKFILL} else params.partition_keys)"


def partition_task(inputs: dict[str, str], **kwargs: Any):
    """The task; `inputs` maps each input's name to the Jinja expression of its list of paths. On
    Kubernetes a pod (`python -m jobs.partition`: Airflow holds no storage credentials there)."""
    if configured_backend() == "kubernetes":
        return partition_pod(inputs, **kwargs)
    return ShortCircuitOperator(
        task_id=TASK_ID,
        python_callable=choose,
        op_kwargs={
            "inputs": {name: f"{{{{ ({expr}) | tojson }}}}" for name, expr in inputs.items()},
            "output_root": "{{ params.output_root }}",
            "take": TAKE,
            "keys": f"{{{{ {KEYS} | tojson }}}}",
            "scheme": "{{ params.partition_by }}",
            "night": f"{{{{ {NIGHT} }}}}",
            "backfill": f"{{{{ {BACKFILL} }}}}",
        },
        doc_md=__doc__,
        ignore_downstream_trigger_rules=False,  # the stage right after it is skipped, not the cumulative sum
        **kwargs,
    )


def partition_pod(inputs: dict[str, str], **kwargs: Any):
    from colliderflow.backends import stage_task

    args = [*(each(expr, "--input", f"{name}=") for name, expr in inputs.items()),
            "--output-root", "{{ params.output_root }}", "--dag-id", "{{ dag.dag_id }}",
            "--run-id", "{{ run_id }}", "--night", f"{{{{ {NIGHT} }}}}", "--take", TAKE, each(KEYS, "--key"),
            "--scheme", "{{ params.partition_by }}"]  # fmt: skip
    return stage_task(Stage(task_id=TASK_ID, module="partition", args=args), do_xcom_push=True,
                      post_execute=HandOn(), doc_md=__doc__, **kwargs)  # fmt: skip


# Jinja: the manifests the partition task chose, for `each(MANIFESTS, "--manifest")`
MANIFESTS = f"ti.xcom_pull(task_ids='{TASK_ID}', key='{MANIFESTS_XCOM}')"
# Jinja: the source's newest manifest, for a task that adds up every partition so far
SOURCE_MANIFEST = f"{{{{ ti.xcom_pull(task_ids='{TASK_ID}', key='{SOURCE_XCOM}') }}}}"
