"""CMS di-muon reduction, nightly: ROOT files -> mass spectrum, muon histograms, cut-flow, metrics.
Thin on purpose: the stage lives in jobs/dimuon/, the task factory in plugins/colliderflow."""

from __future__ import annotations

from airflow.sdk import DAG

from colliderflow.assets import cumulative_asset, output_asset
from colliderflow.backends import stage_task
from colliderflow.collect import collect_metrics
from colliderflow.dag_docs import attach_docs
from colliderflow.dagkit import RUN_DIR, data_root, nightly, results_group
from colliderflow.inputs import check_inputs
from colliderflow.params import (
    common_params,
    engine_args,
    locations_schema,
    optional_string,
    param,
    spark_args,
    spark_resources,
)
from colliderflow.partitioning import MANIFESTS, SOURCE_MANIFEST, partition_task
from colliderflow.stages import Stage, each, option

RUN = RUN_DIR
CUMULATIVE = "{{ params.output_root }}/cms_dimuon/cumulative"

with DAG(
    dag_id="cms_dimuon",
    description="CMS di-muon spectrum (J/psi ... Z) with cut-flow, from ROOT files",
    max_active_runs=4,
    **nightly("0 2 * * *"),
    tags=["cms", "dimuon", "spark"],
    params={
        "input": param(
            [f"{data_root()}/samples/nanoaod/*.root"],
            "Input files",
            "ROOT files, one per line: a path, glob, directory or s3:// / oci:// / root:// URL",
            "Input",
            **locations_schema(),
        ),
        "schema": param(
            "auto",
            "File layout",
            "auto: told by the branches; nanoaod; aod (CMS AOD muons); pairs (one pair per event); "
            "p4 (muon four-vectors)",
            "Input",
            enum=["auto", "nanoaod", "aod", "pairs", "p4"],
        ),
        "tree": optional_string(
            "Tree", "the TTree to read; empty: Events, events or the file's only one", "Input"
        ),
        "chunk_entries": param(
            2_000_000,
            "Entries per Spark task",
            "events one Spark task reads from one file: larger, fewer and longer tasks",
            "Spark",
            type="integer",
            minimum=1000,
        ),
        **common_params(),
    },
) as dag:
    check = check_inputs({"input": "{{ params.input | tojson }}"})
    partition = partition_task({"input": "params.input"})
    dimuon = stage_task(
        Stage(
            task_id="dimuon",
            module="dimuon",
            kind="spark",
            args=[each(MANIFESTS, "--manifest"), "--output", f"{RUN}/dimuon",
                  "--schema", "{{ params.schema }}", *option("--tree", "params.tree"),
                  "--chunk-entries", "{{ params.chunk_entries }}",
                  "--on-bad-file", "{{ params.on_bad_file }}",
                  *engine_args(), *spark_args(RUN)],
            resources=spark_resources(),
            outlets=[output_asset("cms_dimuon_histograms", "cms_dimuon", "dimuon")],
            pool="spark",
        )
    )  # fmt: skip
    cumulative = stage_task(
        Stage(
            task_id="cumulative",
            module="dimuon.cumulative",
            args=["--manifest", SOURCE_MANIFEST, "--output", CUMULATIVE],
            outlets=[cumulative_asset("cms_dimuon_cumulative", "cms_dimuon")],
        ),
        trigger_rule="none_failed",  # also after a night with nothing new: a no-op unless out of date
    )  # fmt: skip
    check >> partition >> dimuon >> cumulative
    with results_group():
        collect_metrics(RUN, after=[dimuon, cumulative])
    attach_docs(dag, __file__)
