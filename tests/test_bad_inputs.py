"""The bad-input catalogue (tests/bad_inputs.toml): every careless or hostile command there, run as a
user runs it (`python -m jobs.<stage>` in a subprocess), must end with the contract's one line, the
expected exit code, and nothing touched — neither the inputs nor anything beside them.

Each case runs in its own copy of a small sandbox of real stage outputs, so that a case that did
delete or write something cannot hide another's result; the cases run two at a time (the machine's
cores), each command once, and the parametrised tests read the results.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from bench.fixtures.ingested import write_ingested
from bench.fixtures.prepared import generate, write_tfrecords
from jobs.core.commit import mark_output

ROOT = pathlib.Path(__file__).resolve().parents[1]
CATALOGUE = tomllib.loads((ROOT / "tests" / "bad_inputs.toml").read_text())["case"]
MESSAGE_LIMIT = 500
# A loose bound on how long a refusal may take on a busy 2-core CI machine: validation happens before
# any work (the targets, 10-15 s on a quiet machine, are reported in the closing notes).
SECONDS_LIMIT = 45


@dataclass(frozen=True)
class Outcome:
    case_dir: pathlib.Path
    code: int
    stderr: str
    seconds: float
    before: dict[str, str]
    after: dict[str, str]


def _tree(root: pathlib.Path) -> dict[str, str]:
    """Every path under `root` (symlinks as their target, files as a digest): what 'nothing touched' means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _build_sandbox(root: pathlib.Path) -> None:
    """Real stage outputs (jobs.generate), stage-shaped outputs from the test generators, and traps."""
    gen = [sys.executable, "-m", "jobs.generate"]
    subprocess.run(
        [*gen, "nanoaod", "--events", "500", "--files", "1", "--output", root / "nano"], check=True
    )
    subprocess.run(
        [*gen, "delphes", "--events", "20", "--files", "1", "--output", root / "delphes"], check=True
    )
    shutil.copytree(root / "nano", root / "par" / "nano")
    (root / "par" / "keep.txt").write_text("not colliderflow's\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "keep.txt").write_text("somebody's notes\n")
    (root / "empty").mkdir()
    (root / "zero").write_bytes(b"")
    (root / "junk.tfrecord").write_bytes(b"this is not a TFRecord file\n" * 4)
    (root / "link").symlink_to("nano")
    write_ingested(str(root / "feat"), {0: 40, 1: 40, 2: 40}, events_per_file=40)
    mark_output(str(root / "feat"), "ingest")
    _with_a_nan(root / "feat", root / "feat_nan")
    arrays = generate(64, seed=1, max_particles=8)
    for split in ("train", "test"):
        write_tfrecords(arrays, str(root / "tfrec" / split), shards=1)
    (root / "tfrec" / "_summary.json").write_text(
        "{}\n"
    )  # a stage output's sidecar, as jobs.tfrecords writes
    (root / "tfrec" / "_SUCCESS").write_bytes(b"")
    mark_output(str(root / "tfrec"), "tfrecords")
    shutil.copytree(root / "tfrec", root / "tfrec_nosuccess")  # a copy that lost its _SUCCESS
    (root / "tfrec_nosuccess" / "_SUCCESS").unlink()
    (root / "model" / "checkpoints").mkdir(parents=True)
    (root / "model" / "model.keras").write_bytes(b"PK\x03\x04 a model folder's stand-in")
    (root / "model" / "checkpoints" / "ckpt-1.weights.h5").write_bytes(b"weights")
    mark_output(str(root / "model"), "train")
    (root / "model" / "_metrics.json").write_text('{"stage": "train", "max_particles": 50}\n')
    (root / "run").mkdir()
    shutil.copytree(root / "nano", root / "run" / "nano")


def _with_a_nan(features: pathlib.Path, copy: pathlib.Path) -> None:
    """A copy of an ingestion output whose first class file holds one NaN in vtxY (as ingest wrote
    them from garbled baskets before it checked)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(features, copy)
    part = copy / "label=0" / "part-00000.parquet"
    table = pq.read_table(part)
    hlf = table.column("hfeatures").combine_chunks()
    values = hlf.values.to_numpy(zero_copy_only=False).copy()
    values[3] = np.nan
    column = (
        pa.FixedSizeListArray.from_arrays(pa.array(values, hlf.type.value_type), hlf.type.list_size)
        if pa.types.is_fixed_size_list(hlf.type)
        else pa.ListArray.from_arrays(hlf.offsets, pa.array(values))
    )
    index = table.schema.get_field_index("hfeatures")
    pq.write_table(table.set_column(index, table.schema.field(index), column), part)


def _fill(value: str, case_dir: pathlib.Path) -> str:
    return value.replace("{d}", str(case_dir))


def _run_case(case: dict, template: pathlib.Path, scratch: pathlib.Path) -> Outcome:
    case_dir = scratch / case["id"]
    shutil.copytree(template, case_dir, symlinks=True)
    before = _tree(case_dir)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **{k: _fill(v, case_dir) for k, v in case.get("env", {}).items()},
    }
    args = [_fill(a, case_dir) for a in case["args"]]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"jobs.{case['stage']}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(case_dir, proc.returncode, proc.stderr, time.monotonic() - start, before, _tree(case_dir))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    template = tmp_path_factory.mktemp("sandbox")
    _build_sandbox(template)
    scratch = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c["id"]: pool.submit(_run_case, c, template, scratch) for c in CATALOGUE}
        return {case_id: f.result() for case_id, f in futures.items()}


def test_catalogue_ids_are_unique():
    ids = [c["id"] for c in CATALOGUE]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CATALOGUE, ids=[c["id"] for c in CATALOGUE])
def test_bad_input(case: dict, outcomes: dict[str, Outcome]):
    got = outcomes[case["id"]]
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    context = f"exit {got.code} after {got.seconds:.1f} s; stderr tail:\n" + "\n".join(lines[-8:])
    assert got.code == case["exit"], context
    assert "Traceback" not in got.stderr, context
    assert len(last) < MESSAGE_LIMIT, context
    assert _fill(case["phrase"], got.case_dir).lower() in last.lower(), context
    changed = sorted(set(got.after.items()) ^ set(got.before.items()))
    assert not changed, f"the sandbox changed: {changed}"
    for path in case.get("keep", []):
        assert os.path.exists(_fill(path, got.case_dir)), path
    assert got.seconds < SECONDS_LIMIT, context
