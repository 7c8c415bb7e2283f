"""Child processes die with the process that started them. A stage's worker processes (the process
executor's pool, the local TensorFlow workers) otherwise outlive a driver killed by SIGKILL or the OOM
killer: blocked under PID 1 for minutes, holding the stage's stdout and stderr open, so that a reader
waiting for their end (the local backend's operator) waits with them. Linux's parent-death signal
(prctl PR_SET_PDEATHSIG) has the kernel kill each child the moment its parent is gone."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child process (a pool initializer, a Popen preexec_fn): SIGKILL when the parent exits. A
    parent that died before this call (the child is already adopted by PID 1 or a subreaper that is
    not its parent) ends the child at once."""
    parent = os.getppid()
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux, or refused: nothing more to do than before
    if os.getppid() != parent or parent == 1:
        os._exit(1)
