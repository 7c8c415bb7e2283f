"""The DL-trigger contract module keeps its promise: the standard library only, so that the Airflow
side (DAG files, plugins) imports it without Arrow, NumPy or anything of jobs.core."""

from __future__ import annotations

import subprocess
import sys

from jobs.dltrigger_schema import CLASSES, SAMPLES, class_name
from tests.conftest import ROOT


def test_imports_only_the_standard_library():
    probe = (
        "import sys; before = set(sys.modules); import jobs.dltrigger_schema; "
        "new = sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] not in sys.stdlib_module_names); "
        "print(' '.join(new))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) <= {"jobs", "jobs.dltrigger_schema", "XRootD", "XRootD.client"} | {
        m for m in out.stdout.split() if m.startswith(("XRootD.", "pyxrootd"))
    }, out.stdout


def test_class_names():
    assert [class_name(c) for c in CLASSES] == list(CLASSES)
    assert [class_name(SAMPLES[c]) for c in CLASSES] == list(CLASSES)
    assert class_name("zjets") is None
