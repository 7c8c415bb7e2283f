"""The run's metrics as Prometheus series, pushed to a Pushgateway as one group per DAG run so that a
rerun replaces its series. The metric names are a contract with the dashboards (docs/metrics.md)."""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
from collections.abc import Sequence
from typing import Any

from jobs.core.errors import BadInputError, InfrastructureError, UsageError

log = logging.getLogger("jobs.metrics")

PUSH_JOB = "colliderflow"
QUANTILES = {"p50": "0.5", "p90": "0.9", "p99": "0.99"}


def prometheus_registry(summary: dict[str, Any]):
    """The run's metrics as Prometheus gauges/counters; dag and run are the push's grouping key."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

    disable_created_metrics()
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, labels: Sequence[str] = ("stage",)) -> Gauge:
        return Gauge(name, doc, list(labels), registry=reg)

    wall = gauge("colliderflow_stage_wall_seconds", "Wall time of a stage (the Airflow task).")
    eps = gauge("colliderflow_events_per_second", "Events processed per second by a stage.")
    events = Counter("colliderflow_events", "Events read by a stage.", ["stage"], registry=reg)
    io_bytes = Counter(
        "colliderflow_io_read_bytes", "Bytes read from storage by a stage.", ["stage"], registry=reg
    )
    latency = gauge(
        "colliderflow_io_read_latency_seconds",
        "Storage read latency quantile of a stage.",
        ("stage", "quantile"),
    )
    run_s = gauge("colliderflow_spark_executor_run_seconds", "Executor run time summed over Spark tasks.")
    cpu_s = gauge(
        "colliderflow_spark_executor_cpu_seconds", "Executor (JVM) CPU time summed over Spark tasks."
    )
    gc_s = gauge("colliderflow_spark_gc_seconds", "JVM GC time summed over Spark tasks.")
    sh_r = gauge("colliderflow_spark_shuffle_read_bytes", "Shuffle bytes read by Spark tasks.")
    sh_w = gauge("colliderflow_spark_shuffle_write_bytes", "Shuffle bytes written by Spark tasks.")
    auc = gauge("colliderflow_auc", "One-vs-rest ROC AUC of a class on the test set.", ("class",))
    train_eps = gauge("colliderflow_training_events_per_second", "Training throughput (events/s).", ())

    times = {k: v.get("duration_seconds") for k, v in summary["stage_times"].items()}
    for name, st in summary["stages"].items():
        times.setdefault(name, st["wall_seconds"])
        if st["events"] is not None:
            events.labels(name).inc(st["events"])
        if st["events_per_second"] is not None:
            eps.labels(name).set(st["events_per_second"])
        if st["bytes_read"]:
            io_bytes.labels(name).inc(st["bytes_read"])
            for q, value in QUANTILES.items():
                if (st["io_latency_ms"] or {}).get(q) is not None:
                    latency.labels(name, value).set(st["io_latency_ms"][q] / 1e3)
    for name, seconds in times.items():
        if seconds is not None:
            wall.labels(name).set(seconds)
    per_stage: dict[str, dict[str, float]] = {}
    apps = summary["spark"]["applications"]
    producing = {a["stage"] for a in apps if a["produced_output"]}
    for app in apps:
        if app["stage"] in producing and not app["produced_output"]:
            continue  # an earlier attempt: its time is not the stage's
        acc = per_stage.setdefault(app["stage"], {})
        for key in (
            "executor_run_seconds",
            "executor_cpu_seconds",
            "gc_seconds",
            "shuffle_read_bytes",
            "shuffle_write_bytes",
        ):
            acc[key] = acc.get(key, 0) + app["totals"][key]
    for name, acc in per_stage.items():
        run_s.labels(name).set(acc["executor_run_seconds"])
        cpu_s.labels(name).set(acc["executor_cpu_seconds"])
        gc_s.labels(name).set(acc["gc_seconds"])
        sh_r.labels(name).set(acc["shuffle_read_bytes"])
        sh_w.labels(name).set(acc["shuffle_write_bytes"])
    for cls, value in (summary["evaluation"].get("auc") or {}).items():
        if value is not None:  # undefined on a test set without the class
            auc.labels(cls).set(value)
    if summary["training"].get("training_events_per_second") is not None:
        train_eps.set(summary["training"]["training_events_per_second"])
    return reg


def check_gateway_url(url: str) -> None:
    """Refuse, before any work, a --pushgateway that is not an http(s)://HOST[:PORT] URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--pushgateway: expected a URL like http://host:9091, got {url!r}")


def push(summary: dict[str, Any], url: str, timeout: float = 10.0) -> None:
    """Replace this run's group (job=colliderflow, dag, run) on the Pushgateway: a rerun overwrites.
    A gateway that refuses the push as malformed (HTTP 4xx: a wrong URL path) is the setting's fault
    (BadInputError); one that cannot be reached or fails (5xx) is an outage (InfrastructureError)."""
    from prometheus_client import push_to_gateway

    grouping = {"dag": summary["dag_id"], "run": summary["run_id"]}
    try:
        push_to_gateway(
            url, job=PUSH_JOB, registry=prometheus_registry(summary), grouping_key=grouping, timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        problem = f"the Pushgateway refused the push (HTTP {exc.code} {exc.reason})"
        if exc.code < 500:
            raise BadInputError(f"--pushgateway {url}", problem) from None
        raise InfrastructureError(f"--pushgateway {url}: {problem}") from None
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InfrastructureError(
            f"--pushgateway {url}: cannot reach the Pushgateway ({reason}); the report was not committed"
        ) from None
    log.info("pushed run metrics to %s (job=%s, dag=%s, run=%s)", url, PUSH_JOB, *grouping.values())
