"""The documentation the Airflow UI shows: each DAG's "Dag Docs" (with its schedule in words, taken from
its own cron) and every task's "Task Docs", from the Markdown beside the DAG file; a task without a
section or a section without a task stops the parse."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG

from colliderflow.dag_docs import attach_docs, read_docs
from tests.dags.test_params import DAG_FILES, load_dag


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_the_dag_and_every_task_documented(path, backend, monkeypatch):
    dag = load_dag(path, backend, monkeypatch)
    cron = dag.timetable.expression
    assert dag.doc_md.startswith("# ") and f"cron `{cron}`" in dag.doc_md
    assert f"At 0{cron.split()[1]}:00 AM (UTC)" in dag.doc_md  # the words agree with the cron
    assert "{schedule}" not in dag.doc_md and f"/{dag.dag_id}/<run id>/" in dag.doc_md
    for task_id, task in dag.task_dict.items():
        assert task.doc_md and len(task.doc_md) > 60 and "## " not in task.doc_md, task_id


def test_sections_and_tasks_must_match(tmp_path):
    dag_file = tmp_path / "d.py"
    dag_file.with_suffix(".md").write_text("# D\n\nintro\n\n## a\nA does a.\n\n## ghost\nno such task\n")
    with DAG("d", schedule=None) as dag:
        from airflow.providers.standard.operators.empty import EmptyOperator

        EmptyOperator(task_id="a")
        EmptyOperator(task_id="b")
    with pytest.raises(
        ValueError, match=r"tasks without a section \['b'\], sections without a task \['ghost'\]"
    ):
        attach_docs(dag, str(dag_file))
    assert read_docs("# D\nintro\n## a\nA.\n## b\nB.\n") == ("# D\nintro", {"a": "A.", "b": "B."})


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_bookkeeping_folds_into_groups_the_docs_name(path, monkeypatch):
    """The grid's rows are the pipeline's stages; the bookkeeping folds into groups whose tasks keep
    their ids (no group prefix), and the DAG's docs say what each group holds."""
    dag = load_dag(path, "local", monkeypatch)
    rows = dag.task_group.children
    assert set(rows["results"].children) >= {"stage_times", "collect_metrics"}
    assert rows["check_inputs"] is dag.task_dict["check_inputs"]
    groups = [name for name, node in rows.items() if name not in dag.task_dict]
    assert set(groups) == ({"results", "demo_sample"} if dag.dag_id == "dl_trigger" else {"results"})
    for group in groups:
        assert f"`{group}`" in dag.doc_md, group
