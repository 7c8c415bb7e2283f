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
"""

from __future__ import annotations

import os

try:
    from XRootD import client as _xrootd_client  # noqa: F401
except ImportError:  # the client is in the spark extra
    pass

NVIDIA_DRIVER = "/proc/driver/nvidia/version"


def quiet_log_level() -> str:
    return "2" if os.path.exists(NVIDIA_DRIVER) else "3"


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", quiet_log_level())
