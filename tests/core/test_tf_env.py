"""TensorFlow's load-time banners are dropped; whatever else a process writes meanwhile still arrives."""

from __future__ import annotations

import subprocess
import sys

BANNERS = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796363000.713569   14204 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796363000.714721   14204 cudart_stub.cc:31] Could not find cuda drivers",
]


def test_only_the_banners_are_dropped():
    written = "".join(line + "\n" for line in [*BANNERS[:2], "a real problem", BANNERS[2]]).encode()
    code = (
        "import os, sys; from jobs.core.tf_env import load_banners_dropped\n"
        "with load_banners_dropped():\n"
        f"    os.write(2, {written!r})\n"
        "    print('python side', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["a real problem", "python side"]
