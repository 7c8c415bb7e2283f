"""Params shared by the DAGs (JSON-schema validated by Airflow and rendered in the trigger form)."""

from __future__ import annotations

from airflow.sdk import Param

from colliderflow.dagkit import data_root

SPARK_MASTER_PATTERN = r"^(local(\[(\*|[1-9][0-9]*)\])?|spark://\S+|k8s://\S+|yarn)$"
SUBSET_PATTERN = r"^(auto|all|[0-9]+/[1-9][0-9]*)$"


def common_params() -> dict[str, Param]:
    return {
        "on_bad_file": Param(
            "fail", enum=["fail", "skip"], description="fail: stop on a bad file; skip: list it"
        ),
        "spark_master": Param(
            "local[*]",
            type="string",
            pattern=SPARK_MASTER_PATTERN,
            description="Spark master for the local backend (local[*], spark://host:7077)",
        ),
        "executors": Param(
            2, type="integer", minimum=1, maximum=500, description="Spark executors (Kubernetes backend)"
        ),
        "executor_cores": Param(1, type="integer", minimum=1, maximum=64),
        "executor_memory": Param("2g", type="string", pattern=r"^[1-9][0-9]*[mg]$"),
        "subset": Param(
            "auto",
            type="string",
            pattern=SUBSET_PATTERN,
            description="k/N: the k-th of N disjoint input-file slices; auto: from the run's date",
        ),
        "subsets": Param(
            1,
            type="integer",
            minimum=1,
            maximum=10000,
            description="N for subset=auto: consecutive days process disjoint slices",
        ),
        "output_root": Param(
            f"{data_root()}/runs",
            type="string",
            minLength=1,
            description="each run writes under <output_root>/<dag>/<run id>/",
        ),
    }
