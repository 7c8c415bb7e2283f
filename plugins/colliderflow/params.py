"""Params shared by the DAGs (JSON-schema validated by Airflow and rendered in the trigger form), and
the Spark arguments and resources that read them. Every Param has a title, a one-line description
(what the form shows under the field) and a section; a Param that the configured backend would
ignore is not shown: the executor sizes exist only on Kubernetes, the Spark master only where a run
may choose it (the local backend)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from colliderflow.backends import configured_backend
from colliderflow.dagkit import data_root
from colliderflow.stages import Resources
from jobs.core.cli import ENGINES
from jobs.core.locations import SUPPORTED_PROTOCOLS

# the longest text Param (paths have their own bound): beyond it the trigger is refused, not the stage
MAX_STRING = 1000
# The form's sections, in the order a run is described: what it reads, the physics choices, the
# classifier's training, where it computes, where it writes.
SECTIONS = ("Input", "Physics", "Training", "Quality", "Spark", "Kubernetes", "Output")

SPARK_MASTER_PATTERN = r"^(local(\[(\*|[1-9][0-9]*)\])?|spark://\S+|k8s://\S+|yarn)$"
PARTITION_SCHEME_PATTERN = r"^(night|folder|hash/[1-9][0-9]{0,3})$"
PARTITION_KEY_PATTERN = r"^[A-Za-z0-9._@/-]+$"
MEMORY_PATTERN = r"^[1-9][0-9]*[mg]$"
# A path, or a URL of a store the project opens: the form and the REST API refuse http(s)://, ftp://,
# data: and `::` chains at trigger time (the first task checks the allowed roots: colliderflow.data_roots)
_STORES = "|".join(SUPPORTED_PROTOCOLS)
_LOCATION = rf"(?!\S*::)(?:(?:{_STORES})://\S+|(?![A-Za-z][A-Za-z0-9+.-]*:)\S+)"
LOCATION_PATTERN = rf"^{_LOCATION}$"
# On Kubernetes every Spark stage runs under the cluster's own master (the backend sets it).
IN_CLUSTER = "k8s://https://kubernetes.default.svc:443"


def param(default: Any, title: str, description: str, section: str, **schema: Any) -> Param:
    """A Param as the trigger form shows it: `title` as the label, `description` under the field."""
    if section not in SECTIONS:
        raise ValueError(f"section {section!r}: choose one of {', '.join(SECTIONS)}")
    types = schema.get("type", [])
    if "string" in ([types] if isinstance(types, str) else types):
        schema.setdefault("maxLength", MAX_STRING)  # a 1 MB value once reached the command line
    return Param(default, title=title, description=description, section=section, **schema)


def optional_string(title: str, description: str, section: str, **schema: Any) -> Param:
    """An optional text field: None (JSON null) when left empty. The form treats a "" default as a
    missing required value and opens with the Trigger button disabled."""
    return param(None, title, description, section, type=["null", "string"], **schema)


def common_params(backend: str | None = None) -> dict[str, Param]:
    """The Params every DAG has: bad-file policy, which partitions, where Spark runs, the output root."""
    backend = backend or configured_backend()
    return {
        "on_bad_file": param(
            "fail",
            "On a bad input file",
            "fail: an unreadable or incomplete file stops the run; skip: leave it out and list it",
            "Input",
            enum=["fail", "skip"],
        ),
        **partition_params(),
        **spark_params(backend),
        "output_root": param(
            f"{data_root()}/runs",
            "Output root",
            "each run writes under <output_root>/<dag id>/<run id>/ (a path or URL inside the data roots)",
            "Output",
            **location_schema(),
        ),
    }


def partition_params() -> dict[str, Param]:
    """Which data a run reads (colliderflow.partitioning): new files by default, everything, or named
    partitions. A backfill run ignores these (it reprocesses its night's recorded partition)."""
    return {
        "take": param(
            "new",
            "Data to process",
            "new: files no partition holds (nightly); all: everything; named: the keys below (backfills: "
            "their nights)",
            "Input",
            enum=["new", "all", "named"],
            values_display={
                "new": "New files only (nightly)",
                "all": "Everything (every partition)",
                "named": "Named partitions",
            },
        ),
        "partition_keys": param(
            [],
            "Partition keys",
            "for Data = named, one per line: a night (2026-12-07), a folder (Run2012B), a bucket (03/16)",
            "Input",
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": 200, "pattern": PARTITION_KEY_PATTERN},
            maxItems=1000,
        ),
        "partition_by": param(
            "night",
            "New partitions by",
            "night: the run's night; folder: the first folder below the input; hash/N: N name buckets",
            "Input",
            type="string",
            pattern=PARTITION_SCHEME_PATTERN,
        ),
    }


def location_schema() -> dict[str, Any]:
    """The JSON schema of a path Param: a path or a URL of a supported store."""
    return {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": LOCATION_PATTERN}


def locations_schema() -> dict[str, Any]:
    """The JSON schema of an input Param: a list of paths, globs, directories or URLs (the form shows
    one per line); each is one value, whatever characters it holds, never split into words."""
    return {"type": "array", "items": location_schema(), "minItems": 1, "maxItems": 1000}


def spark_params(backend: str) -> dict[str, Param]:
    """Where Spark runs: the master on the local backend, the executor pods on Kubernetes."""
    if backend != "kubernetes":
        return {
            "spark_master": param(
                "local[*]",
                "Spark master",
                "local[*] (every core here), local[N], spark://host:7077, k8s://https://host:443 or yarn",
                "Spark",
                type="string",
                pattern=SPARK_MASTER_PATTERN,
            ),
            "engine": param(
                "auto",
                "Engine",
                "auto: the data stages run in worker processes (no JVM) for a local master; spark: in Spark",
                "Spark",
                enum=list(ENGINES),
            ),
        }
    return {
        # not a run's choice on Kubernetes (the cluster's Spark, always): constants, which the form hides
        "engine": param(
            "spark", "Engine", "Spark on the cluster", "Kubernetes", type="string", const="spark"
        ),
        "spark_master": param(
            IN_CLUSTER, "Spark master", "the cluster's own", "Kubernetes", type="string", const=IN_CLUSTER
        ),
        "executors": param(
            2,
            "Spark executors",
            "executor pods of each Spark stage (spark.executor.instances)",
            "Kubernetes",
            type="integer",
            minimum=1,
            maximum=500,
        ),
        "executor_cores": param(
            1,
            "Cores per executor",
            "CPU cores of each executor pod, i.e. Spark tasks it runs at once (spark.executor.cores)",
            "Kubernetes",
            type="integer",
            minimum=1,
            maximum=64,
        ),
        "executor_memory": param(
            "2g",
            "Memory per executor",
            "JVM heap of each executor pod, e.g. 2g or 512m (spark.executor.memory)",
            "Kubernetes",
            type="string",
            pattern=MEMORY_PATTERN,
        ),
    }


def engine_args() -> list[str]:
    """The engine option of the stages that run on jobs.core.engine (dimuon, ingest, prepare, tfrecords)."""
    return ["--engine", "{{ params.engine }}"]


def spark_args(run_dir: str) -> list[str]:
    """The options every Spark stage takes from the run: its master and its event-log directory."""
    return ["--master", "{{ params.spark_master }}", "--event-log-dir", f"{run_dir}/spark-events"]


def spark_resources(backend: str | None = None) -> Resources:
    """A Spark stage's driver (fixed) and executors: from the run's Params on Kubernetes, the only
    backend that sizes executors (on the local backend they are the master's: local[N] runs them in
    the driver, a spark:// cluster has its own)."""
    if (backend or configured_backend()) != "kubernetes":
        return Resources(cpu=1, memory="4Gi")
    return Resources(
        cpu=1,
        memory="4Gi",
        executors="{{ params.executors }}",
        executor_cores="{{ params.executor_cores }}",
        executor_memory="{{ params.executor_memory }}",
    )
