"""Documentation shown in the Airflow UI ("Dag Docs" and each task's "Task Docs"), kept beside each DAG
file as Markdown (dags/<dag file>.md) so the DAG file stays thin: the text before the first `## `
heading documents the DAG, and a `## <task_id>` section each task. A task without a section, or a
section without a task, is an error at parse time: the docs cannot drift from the DAG. `{schedule}` in
the text becomes the schedule in words, from the DAG's own timetable."""

from __future__ import annotations

import re
from pathlib import Path

from airflow.sdk import DAG

_SECTION = re.compile(r"^## +(\S+)\s*$", re.M)


def read_docs(markdown: str) -> tuple[str, dict[str, str]]:
    """(the DAG's doc, {task_id: the task's doc}) of a DAG's Markdown file."""
    parts = _SECTION.split(markdown)
    tasks = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}
    return parts[0].strip(), tasks


def schedule_in_words(dag: DAG) -> str:
    """E.g. "At 02:00 AM (UTC), cron `0 2 * * *`": the words of cron_descriptor, which Airflow's own
    cron timetables use for their description."""
    from cron_descriptor import get_description

    cron = getattr(dag.timetable, "expression", None)
    if not cron:
        return str(dag.timetable)
    return f"{get_description(cron)} ({getattr(dag.timetable, 'timezone', 'UTC')}), cron `{cron}`"


def attach_docs(dag: DAG, dag_file: str) -> None:
    """Set doc_md on `dag` and on each of its tasks from the Markdown file beside `dag_file`."""
    path = Path(dag_file).with_suffix(".md")
    doc, tasks = read_docs(path.read_text().replace("{schedule}", schedule_in_words(dag)))
    missing = sorted(set(dag.task_dict) - set(tasks))
    unknown = sorted(set(tasks) - set(dag.task_dict))
    if missing or unknown:
        raise ValueError(f"{path}: tasks without a section {missing}, sections without a task {unknown}")
    dag.doc_md = doc
    for task_id, task in dag.task_dict.items():
        task.doc_md = tasks[task_id]
