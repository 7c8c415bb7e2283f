"""Multi-worker plumbing for jobs.train, free of TensorFlow imports: where the cluster description
(TF_CONFIG) comes from, who is the chief, and a local launcher that runs N worker processes of a
module on loopback (what tests and the local Airflow backend use; Kubernetes starts one pod per
worker instead, each with its own TF_CONFIG or the COLLIDERFLOW_WORKER_* variables).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobs.core.cli import EXIT_BAD_INPUT
from jobs.core.errors import UsageError
from jobs.core.lifetime import die_with_parent

log = logging.getLogger("jobs.train")

HOSTS_VAR = "COLLIDERFLOW_WORKER_HOSTS"
INDEX_VARS = ("COLLIDERFLOW_WORKER_INDEX", "JOB_COMPLETION_INDEX")


@dataclass(frozen=True)
class ClusterInfo:
    """This process's place in the training cluster; num_workers == 1 means no cluster."""

    tf_config: dict | None
    num_workers: int
    index: int
    is_chief: bool


def tf_config_from_env(env: Mapping[str, str]) -> dict | None:
    """TF_CONFIG if set; else one built from COLLIDERFLOW_WORKER_HOSTS=host:port,host:port and the
    worker index in COLLIDERFLOW_WORKER_INDEX or JOB_COMPLETION_INDEX (an Indexed Kubernetes Job sets
    the latter for each pod); else None (single process)."""
    raw = env.get("TF_CONFIG", "").strip()
    if raw:
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"TF_CONFIG is not valid JSON: {exc}") from None
        if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
            raise UsageError("TF_CONFIG needs 'cluster' and 'task' entries")
        return config
    hosts = [h.strip() for h in env.get(HOSTS_VAR, "").split(",") if h.strip()]
    if not hosts:
        return None
    bad = [h for h in hosts if ":" not in h]
    if bad:
        raise UsageError(f"{HOSTS_VAR}: expected host:port entries, got {', '.join(bad)}")
    index_var = next((v for v in INDEX_VARS if env.get(v, "").strip()), None)
    if index_var is None:
        raise UsageError(
            f"{HOSTS_VAR} is set but neither {' nor '.join(INDEX_VARS)} gives this worker's index"
        )
    try:
        index = int(env[index_var])
    except ValueError:
        raise UsageError(f"{index_var}={env[index_var]!r} is not an integer") from None
    if not 0 <= index < len(hosts):
        raise UsageError(
            f"{index_var}={index} is outside 0..{len(hosts) - 1} ({HOSTS_VAR} lists {len(hosts)})"
        )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def cluster_info(env: Mapping[str, str]) -> ClusterInfo:
    """Chief = the 'chief' task if the cluster has one, else worker 0 (MultiWorkerMirroredStrategy's rule)."""
    config = tf_config_from_env(env)
    if config is None:
        return ClusterInfo(None, 1, 0, True)
    cluster = config["cluster"]
    task = config["task"]
    num = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    # the input shard index: chief first, then the workers
    shard_index = index + (len(cluster.get("chief", [])) if kind == "worker" else 0)
    return ClusterInfo(config, num, shard_index, is_chief)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free right now (bound to port 0, read back, released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch_local_workers(
    module: str,
    argv: Sequence[str],
    num_workers: int,
    env: Mapping[str, str] | None = None,
    grace_seconds: float = 5.0,
    wrapper: Sequence[str] = (),
) -> int:
    """Run `python -m module argv` as num_workers processes on loopback, each with its TF_CONFIG; wait
    for all. Every worker is polled a few times a second: when one fails or dies, the others are
    stopped at once (they would block in the next collective until TensorFlow's heartbeat timeout
    otherwise; SIGKILL after `grace_seconds`), one line names the worker, and its exit code is
    returned. `wrapper` is a command prefix for each worker (tests run every worker in its own mount
    namespace with it, so that the workers share no disk)."""
    ports = free_ports(num_workers)
    hosts = [f"localhost:{p}" for p in ports]
    base = dict(os.environ if env is None else env)
    base.pop(HOSTS_VAR, None)
    procs: list[subprocess.Popen] = []
    for i in range(num_workers):
        config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        procs.append(
            subprocess.Popen(
                [*wrapper, sys.executable, "-m", module, *argv],
                env={**base, "TF_CONFIG": json.dumps(config)},
                preexec_fn=die_with_parent,  # noqa: PLW1509 - a prctl in the child, no lock taken
            )
        )
    log.info(
        "launched %d local workers on %s (pids %s)", num_workers, ",".join(hosts), [p.pid for p in procs]
    )
    rc = 0
    failed: tuple[int, subprocess.Popen] | None = None

    def _stop(signum, _frame):  # SIGTERM to the launcher (e.g. a task timeout) stops the workers too
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            codes = [p.poll() for p in procs]  # every worker, not only up to the first one running
            failed = next(((i, p) for i, p in enumerate(procs) if p.returncode not in (None, 0)), None)
            if failed or all(c is not None for c in codes):
                break
            time.sleep(0.2)
        if failed:
            index, proc = failed
            rc = proc.returncode
            others = sum(p.poll() is None for p in procs)
            if rc != EXIT_BAD_INPUT:  # a rejected input: the worker printed its own one-line reason
                print(
                    f"error: {module}: worker {index} of {num_workers} (pid {proc.pid}) {_death(rc)}; "
                    f"stopping the {others} other worker(s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if rc == 0:
        rc = next((p.returncode for p in procs if p.returncode != 0), 0)
    return 128 - rc if rc < 0 else rc  # killed by signal k -> 128 + k, as a shell reports it
