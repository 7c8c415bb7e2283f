"""A cluster on one machine: a Spark standalone master and two workers on loopback, every worker (and
every driver started through `isolated`) in its own mount namespace with a private tmpfs on /tmp and
its own work and scratch directories, so no executor can see the driver's or another executor's local
files. What works here works without a shared disk; data goes through object storage (moto, XRootD).

`unshare -m --propagation private` needs root (as here and in CI); `cluster_unavailable()` says why
the cluster cannot start elsewhere."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs "$@" after giving the namespace a fresh /tmp. Paths that live under /tmp and must stay visible
# (the checkout and its venv when CI clones below /tmp) are bind-mounted aside first, then back.
_NAMESPACE_SCRIPT = r"""
set -e
keep=""
for p in $CF_KEEP_PATHS; do
  case "$p" in /tmp/*) keep="$keep $p" ;; esac
done
if [ -n "$keep" ]; then
  mount -t tmpfs tmpfs /mnt
  i=0; for p in $keep; do mkdir -p /mnt/$i && mount --bind "$p" /mnt/$i; i=$((i+1)); done
fi
mount -t tmpfs -o size=4g,mode=1777 tmpfs /tmp
if [ -n "$keep" ]; then
  i=0; for p in $keep; do mkdir -p "$p" && mount --bind /mnt/$i "$p"; i=$((i+1)); done
fi
exec "$@"
"""


def cluster_unavailable() -> str | None:
    """Why a namespaced cluster cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "private mount namespaces need root (unshare -m)"
    if shutil.which("unshare") is None or shutil.which("java") is None:
        return "unshare and java are needed for the namespaced Spark cluster"
    probe = subprocess.run(isolated(["true"]), capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -m failed: {probe.stderr.strip()[:200]}"
    return None


def isolated(cmd: Sequence[str]) -> list[str]:
    """`cmd` in a private mount namespace with its own empty tmpfs on /tmp."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT, "isolated", *cmd]


def isolated_env(env: Mapping[str, str] | None = None, keep: Sequence[str] = ()) -> dict[str, str]:
    """The environment for an `isolated` process: TMPDIR in the private /tmp, the checkout, the
    interpreter and the `keep` paths (e.g. an Airflow home) kept visible, Spark bound to loopback."""
    keep = {str(ROOT), sys.prefix, os.path.realpath(sys.prefix), sys.base_prefix, *map(str, keep)}
    out = {**os.environ, **(env or {})}
    out.update(
        TMPDIR="/tmp",
        CF_KEEP_PATHS=" ".join(sorted(p for p in keep if p.startswith("/tmp/"))),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_CONF_DIR=str(ROOT / "tests" / "cluster_conf"),
        PYSPARK_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH")])),
    )
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")


@dataclass
class SparkCluster:
    master_url: str
    ui_url: str
    workers: int
    log_dir: pathlib.Path

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as reply:
            return json.load(reply)

    def logs(self) -> str:
        """The tail of every daemon's log, for a failing test's message."""
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def spark_cluster(workers: int = 2, cores: int = 1, memory: str = "2g") -> Iterator[SparkCluster]:
    """A standalone master and `workers` workers, each worker in its own namespace (own /tmp, own
    work dir, own local dirs); yields when every worker has registered, stops them all on exit."""
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="cf-spark-cluster-"))
    port, ui_port = _free_port(), _free_port()
    spark_class = _spark_class()
    env = isolated_env({"SPARK_NO_DAEMONIZE": "1"})
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str]) -> None:
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child process
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    master = f"spark://127.0.0.1:{port}"
    cluster = SparkCluster(master, f"http://127.0.0.1:{ui_port}", workers, log_dir)
    try:
        start(
            "master",
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui_port)],
        )  # fmt: skip
        for i in range(workers):
            worker = [
                "env", "SPARK_LOCAL_DIRS=/tmp/spark-local", "SPARK_WORKER_DIR=/tmp/spark-work",
                spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--cores", str(cores), "--memory", memory, "--webui-port", str(_free_port()),
                "--work-dir", "/tmp/spark-work", master,
            ]  # fmt: skip
            start(f"worker-{i}", isolated(worker))
        deadline = time.monotonic() + 120
        while True:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a Spark daemon exited while starting\n{cluster.logs()}")
            with contextlib.suppress(OSError, ValueError):
                if sum(w.get("state") == "ALIVE" for w in cluster.state().get("workers", [])) == workers:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Spark cluster did not come up in 120 s\n{cluster.logs()}")
            time.sleep(1)
        yield cluster
    finally:
        _stop(procs)
        shutil.rmtree(log_dir, ignore_errors=True)


def run_driver(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m <args>` as a driver in its own namespace (own /tmp): what it needs must come from the
    storage URLs on its command line, as on a cluster."""
    cmd = isolated([sys.executable, "-m", *args])
    return subprocess.run(cmd, env=isolated_env(env), capture_output=True, text=True, timeout=timeout)
