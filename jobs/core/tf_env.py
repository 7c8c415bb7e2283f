"""A process's setup for TensorFlow; every module that imports TensorFlow imports this first.

- The XRootD client is loaded before TensorFlow: the other order segfaults in XRootD's import
  (xrootd 6.2.1 beside tensorflow 2.x), e.g. a train or evaluate run reading root:// URLs. Only
  processes that load TensorFlow load it this early: the Airflow side (which imports jobs.core.cli)
  never does, so XRootD's exit hook never runs in a task process whose descriptors the supervisor
  has closed (it raised `OSError: Bad file descriptor` at the end of every task log).
- tf.keras is tf_keras (legacy Keras 2; docs/dl-trigger-training.md says why).
- TensorFlow's C++ log is quiet unless the user set TF_CPP_MIN_LOG_LEVEL: warnings and infos off
  (2), and on a machine without an NVIDIA driver errors too (3), where the only one is CUDA's
  "failed call to cuInit", an ERROR line in every successful CPU run's log.
- TensorFlow's load-time banners (oneDNN, "could not find cuda drivers", absl's "log messages before
  InitializeLog"), which it writes before any log level applies, are dropped from the import's stderr;
  every other line the import writes still reaches stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator

try:
    from XRootD import client as _xrootd_client  # noqa: F401
except ImportError:  # the client is in the spark extra
    pass

NVIDIA_DRIVER = "/proc/driver/nvidia/version"


LOAD_BANNER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I0000 [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] )"
)


@contextlib.contextmanager
def load_banners_dropped() -> Iterator[None]:
    """Collect what the process writes to file descriptor 2 meanwhile; pass on all but the banners."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as collected:
        saved = os.dup(2)
        os.dup2(collected.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            collected.seek(0)
            for line in collected:
                if not LOAD_BANNER.match(line):
                    os.write(2, line)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` inside load_banners_dropped, then steps aside."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec(module) -> None:  # noqa: ANN001
                with load_banners_dropped():
                    exec_module(module)

            spec.loader.exec_module = quiet_exec  # type: ignore[method-assign]
        return spec


def quiet_log_level() -> str:
    return "2" if os.path.exists(NVIDIA_DRIVER) else "3"


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", quiet_log_level())
if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, QuietTensorFlowImport())
