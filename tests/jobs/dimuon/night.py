"""One cms_dimuon night outside Airflow, step by step as its tasks take them: choose the partitions,
reduce them, bring the cumulative result up to date. The kill-at-each-step test runs it under strace.

    python -m tests.jobs.dimuon.night INPUT OUTPUT_ROOT RUN_ID NIGHT
"""

from __future__ import annotations

import sys

from jobs.core.partitions import Source, partitions_root, plan_run
from jobs.dimuon import cumulative, job


def night(inp: str, runs: str, run_id: str, key: str) -> None:
    plan = plan_run(partitions_root(runs, "cms_dimuon"), Source({"input": [inp]}, runs), run_id, key)
    if plan.partitions:
        out = f"{runs}/cms_dimuon/{run_id}/dimuon"
        job.run([], out, manifests=plan.manifests, engine="processes", plot=False)
    if plan.latest:
        cumulative.build(plan.latest, f"{runs}/cms_dimuon/cumulative", plot=False)


if __name__ == "__main__":
    night(*sys.argv[1:5])
