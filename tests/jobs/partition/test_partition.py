"""`python -m jobs.partition`, the partition choice as the Kubernetes backend runs it in a pod: its
decision as JSON (the pod's XCom file), another run's unfinished partition taken over only once its
claim is old, a wrong key refused in one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def choose(tmp_path, run_id: str, night: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.partition", "--input", f"input={tmp_path / 'in'}",
           "--output-root", str(tmp_path / "runs"), "--dag-id", "cms_dimuon", "--run-id", run_id,
           "--night", night, "--result", str(tmp_path / f"{run_id}.json"), *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_stage_decides_like_the_local_task_and_takes_over_only_old_claims(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"f{i}.root").write_bytes(b"x" * (i + 1))
    assert choose(tmp_path, "r1", "2026-03-01").returncode == 0
    first = json.loads((tmp_path / "r1.json").read_text())
    assert first["keys"] == ["2026-03-01"] and first["latest"] == first["manifests"][0]
    assert choose(tmp_path, "r2", "2026-03-02").returncode == 0  # r1's partition is fresh: r1's own
    assert json.loads((tmp_path / "r2.json").read_text())["manifests"] == []
    assert choose(tmp_path, "r3", "2026-03-03", "--orphan-after-hours", "0").returncode == 0
    assert json.loads((tmp_path / "r3.json").read_text())["keys"] == ["2026-03-01"]  # old enough: taken
    refused = choose(tmp_path, "r4", "2026-03-04", "--take", "named", "--key", "2027-01-01")
    last = refused.stderr.strip().splitlines()[-1]
    assert (
        refused.returncode == 2 and "partition 2027-01-01: is not recorded under" in last and len(last) < 500
    )
