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
