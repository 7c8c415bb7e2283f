"""The task after check_inputs: which partitions this run processes (jobs.core.partitions). Its
return value, the manifests' URLs, is what the stages read (`--manifest`, one per partition), so no
stage lists an input on its own, on any backend. An empty list skips the stage right after it (and what
depends on it): a night with nothing new ends `success` after one log line saying so; the cumulative
sum still runs, which brings it up to date if an earlier run was killed while writing it.

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

from colliderflow.stages import values_of

log = logging.getLogger(__name__)

TASK_ID = "partition"
LIVE_STATES = ("queued", "running")
KEYS_XCOM = "partition_keys"
SOURCE_XCOM = "source_manifest"


def night_of(context: dict[str, Any]) -> str:
    """The run's night: its partition key, else the date of its logical date (or of when it ran)."""
    dag_run = context["dag_run"]
    if getattr(dag_run, "partition_key", None):
        return str(dag_run.partition_key)
    when = dag_run.logical_date or dag_run.run_after
    return when.strftime("%Y-%m-%d")


def is_live(dag_id: str, own_run: str):
    """Whether another run of the DAG still runs (its partitions are its own to finish)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def live(run_id: str) -> bool:
        if not run_id or run_id == own_run:
            return False
        try:
            return str(RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)) in LIVE_STATES
        except Exception:  # noqa: BLE001 - a run deleted from the metadata DB is not running
            return False

    return live


def choose(inputs: dict[str, str], output_root: str, take: str, keys: str, scheme: str) -> list[str]:
    """ShortCircuit condition: the manifests of the partitions this run processes ([] skips the stages)."""
    from airflow.sdk import get_current_context

    from jobs.core.errors import BadInputError, UsageError
    from jobs.core.partitions import Source, partitions_root, plan_run

    context = get_current_context()
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    source = Source({name: values_of(v) for name, v in inputs.items()}, output_root.rstrip("/"))
    root = partitions_root(output_root, dag_id)
    night = night_of(context)
    kind = str(getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type))
    names = values_of(keys)
    if kind == "backfill":
        take, names = "named", [night]
    try:
        plan = plan_run(root, source, run_id, night, take=take, names=names, scheme=scheme,
                        is_live=is_live(dag_id, run_id))  # fmt: skip
    except (BadInputError, UsageError) as exc:
        hint = " (a backfill reprocesses the partitions its nights recorded)" if kind == "backfill" else ""
        raise AirflowFailException(f"{exc}{hint}") from None
    for note in plan.notes:
        log.warning("%s", note)
    context["ti"].xcom_push(SOURCE_XCOM, plan.latest)
    if not plan.partitions:
        log.info("nothing new under %s since the last partition: the stages are skipped", ", ".join(
            v for vs in source.inputs.values() for v in vs))  # fmt: skip
        return []
    for p in plan.partitions:
        log.info("partition %s: %d file(s), claimed by %s (%s)", p.key, len(p.files), p.owner, p.manifest)
    context["ti"].xcom_push(KEYS_XCOM, [p.key for p in plan.partitions])
    return plan.manifests


def partition_task(inputs: dict[str, str], **kwargs: Any) -> ShortCircuitOperator:
    """The task; `inputs` maps each input's name to its (templated, JSON) Param value."""
    return ShortCircuitOperator(
        task_id=TASK_ID,
        python_callable=choose,
        op_kwargs={
            "inputs": inputs,
            "output_root": "{{ params.output_root }}",
            "take": "{{ params.take }}",
            "keys": "{{ params.partition_keys | tojson }}",
            "scheme": "{{ params.partition_by }}",
        },
        doc_md=__doc__,
        ignore_downstream_trigger_rules=False,  # the stage right after it is skipped, not the cumulative sum
        **kwargs,
    )


# Jinja: the manifests the partition task chose, for `each(MANIFESTS, "--manifest")`
MANIFESTS = f"ti.xcom_pull(task_ids='{TASK_ID}')"
# Jinja: the source's newest manifest, for a task that adds up every partition so far
SOURCE_MANIFEST = f"{{{{ ti.xcom_pull(task_ids='{TASK_ID}', key='{SOURCE_XCOM}') }}}}"
