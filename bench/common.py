"""What every benchmark shares: the results file (out/bench/<name>.json), the targets block, marginal
rates from two input sizes, and peak resident memory of a process tree sampled with psutil.

Memory is sampled (every 50 ms) over the process tree of the measured run: `driver` is the process
that runs the stage's driver (this Python process, or the contender's own process), `jvm` the Spark
JVM (in local mode it also runs the executors' JVM side), `task` the largest single Python worker
process below the JVM (pyspark's forked workers; a TF worker process). RSS counts pages shared with the
parent after a fork, so a task's figure is an upper bound of what it adds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

RESULTS_DIR_ENV = "COLLIDERFLOW_BENCH_DIR"
QUICK_ENV = "COLLIDERFLOW_BENCH_QUICK"
SAMPLE_SECONDS = 0.05
MEMORY_METHOD = (
    "psutil RSS of the run's process tree sampled every 50 ms: driver = the driver process, "
    "jvm = the Spark JVM, task = the largest single Python worker (forked, shared pages counted)"
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get(QUICK_ENV, "") not in ("", "0"),
        help=f"small inputs, one repetition (also: {QUICK_ENV}=1)",
    )
    parser.add_argument(
        "--results-dir",
        default=os.environ.get(RESULTS_DIR_ENV, "out/bench"),
        help=f"where <name>.json goes (also: {RESULTS_DIR_ENV})",
    )


def cores_available() -> int:
    return len(os.sched_getaffinity(0))


def marginal_rate(small: tuple[int, float], large: tuple[int, float], cores: int) -> float | None:
    """Events/s/core from the slope between two (events, seconds) runs: fixed start-up and JIT costs
    cancel. None when the large run was not slower (noise swamped the difference)."""
    (n0, t0), (n1, t1) = small, large
    if t1 <= t0 or n1 <= n0:
        return None
    return (n1 - n0) / (t1 - t0) / cores


def startup_seconds(small: tuple[int, float], rate_per_core: float | None, cores: int) -> float | None:
    """The intercept: wall time of the small run less its events at the marginal rate."""
    if rate_per_core is None:
        return None
    n0, t0 = small
    return t0 - n0 / (rate_per_core * cores)


def target(value: float | None, goal: float, what: str, higher_is_better: bool = True) -> dict:
    """One target: met or not, and the ratio value/goal (how far from it)."""
    if value is None:
        return {"what": what, "goal": goal, "value": None, "met": False, "ratio": None}
    met = value >= goal if higher_is_better else value <= goal
    return {"what": what, "goal": goal, "value": value, "met": bool(met), "ratio": value / goal}


MEMORY_GROWTH_TOLERANCE = 1.5


def memory_growth(peaks: dict) -> dict | None:
    """Peak RSS of the large input over the small one, per process role: a stage that streams keeps
    every ratio near 1 however much larger the input is (`streams`: all within the tolerance)."""
    small, large = peaks.get("small") or {}, peaks.get("large") or {}
    ratios = {k: round(large[k] / small[k], 3) for k in small if small.get(k) and large.get(k)}
    if not ratios:
        return None
    return {
        "large_over_small": ratios,
        "tolerance": MEMORY_GROWTH_TOLERANCE,
        "streams": all(r <= MEMORY_GROWTH_TOLERANCE for r in ratios.values()),
    }


def write_result(results_dir: str, name: str, result: dict) -> str:
    os.makedirs(results_dir, exist_ok=True)
    growth = memory_growth(result.get("peak_rss_mb") or {})
    if growth and "memory_growth" not in result:
        result = {**result, "memory_growth": growth}
    path = os.path.join(results_dir, f"{name}.json")
    result = {
        "benchmark": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": cores_available(), "load_average_1m": os.getloadavg()[0]},
        **result,
    }
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2, default=float)
    os.replace(path + ".tmp", path)
    print(f"results -> {path}")
    return path


@dataclass
class PeakRSS:
    """Peak RSS (MB) of a process tree while the `with` block runs (or while `watch` waits)."""

    pid: int = field(default_factory=os.getpid)
    driver: float = 0.0
    jvm: float = 0.0
    task: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while True:
            try:
                self.driver = max(self.driver, root.memory_info().rss / 1e6)
                for child in root.children(recursive=True):
                    try:
                        rss = child.memory_info().rss / 1e6
                        name = child.name()
                    except psutil.Error:
                        continue
                    if name == "java":
                        self.jvm = max(self.jvm, rss)
                    elif name.startswith("python"):
                        self.task = max(self.task, rss)
            except psutil.Error:
                pass
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def as_dict(self) -> dict:
        r = lambda x: round(x, 1) if x else None  # noqa: E731 - local shorthand
        return {"driver": r(self.driver), "jvm": r(self.jvm), "task": r(self.task)}


def run_command(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, dict]:
    """Run a contender as its own process: (wall seconds including its start-up, peak RSS)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), env={**os.environ, **(env or {})})
    with PeakRSS(proc.pid) as peak:
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited with {rc}")
    return wall, peak.as_dict()


def bytes_under(url: str) -> int:
    """Bytes of every file under a local path or a storage URL (what a stage wrote), through the
    project's storage layer (its S3 endpoint and credentials from the environment)."""
    from jobs.core import storage

    fs, path = storage.filesystem(url)
    fs.invalidate_cache()
    return int(fs.du(path, total=True))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
