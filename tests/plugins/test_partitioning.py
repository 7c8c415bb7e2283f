"""The Airflow side of the partition choice on Kubernetes: the pod's decision handed on as the XComs
the later tasks read, and a night with nothing new skipping the stages (colliderflow.partitioning)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def test_the_pods_decision_is_handed_on_and_nothing_new_skips(monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from colliderflow.partitioning import HandOn

    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    HandOn()({"ti": ti}, {"manifests": ["m1"], "keys": ["k1"], "latest": "m1", "notes": []})
    assert pushed == {"manifests": ["m1"], "partition_keys": ["k1"], "source_manifest": "m1"}
    with pytest.raises(AirflowSkipException, match="nothing new"):
        HandOn()({"ti": ti}, {"manifests": [], "keys": [], "latest": "m1", "notes": []})
    assert pushed["source_manifest"] == "m1"  # the cumulative sum still finds its source


def test_a_running_run_is_live_whatever_type_airflow_gives_its_state(monkeypatch):
    """Airflow hands the state as a DagRunState, whose str() is `DagRunState.RUNNING`: read as not
    running, it let a racing run take over a running run's partition (caught by the standalone test)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.utils.state import DagRunState

    from colliderflow.partitioning import is_live

    states = {"a": DagRunState.RUNNING, "b": DagRunState.QUEUED, "c": DagRunState.FAILED, "d": "success"}
    monkeypatch.setattr(
        RuntimeTaskInstance, "get_dagrun_state", staticmethod(lambda dag_id, run_id: states[run_id])
    )
    live = is_live("cms_dimuon", "me")
    assert [live(r) for r in ("a", "b", "c", "d", "me")] == [True, True, False, False, False]
