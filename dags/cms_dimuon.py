"""CMS di-muon reduction, nightly: ROOT files -> mass spectrum, muon histograms, cut-flow, metrics.
Thin on purpose: the stage lives in jobs/dimuon.py, the task factory in plugins/colliderflow."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param

from colliderflow.backends import stage_task
from colliderflow.collect import collect_metrics
from colliderflow.dagkit import USER_DEFINED_FILTERS, USER_DEFINED_MACROS, data_root, default_args
from colliderflow.params import common_params
from colliderflow.stages import Resources, Stage

RUN = "{{ run_dir(params.output_root, dag.dag_id, run_id) }}"

with DAG(
    dag_id="cms_dimuon",
    description="CMS di-muon spectrum (J/psi ... Z) with cut-flow, from NanoAOD/AOD/flat ROOT files",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args=default_args(),
    user_defined_filters=USER_DEFINED_FILTERS,
    user_defined_macros=USER_DEFINED_MACROS,
    tags=["cms", "dimuon", "spark"],
    params={
        "input": Param(
            f"{data_root()}/samples/nanoaod/*.root",
            type="string",
            minLength=1,
            description="ROOT files: paths, globs or s3:// / oci:// URLs, space-separated",
        ),
        "schema": Param("auto", enum=["auto", "nanoaod", "aod", "pairs", "p4"]),
        "tree": Param("", type="string", description="tree name; empty: Events/events or the only TTree"),
        "chunk_entries": Param(2_000_000, type="integer", minimum=1000, description="entries per Spark task"),
        **common_params(),
    },
) as dag:
    dimuon = stage_task(
        Stage(
            task_id="dimuon",
            module="dimuon",
            kind="spark",
            args=[
                "--input",
                "{{ params.input }}",
                "--output",
                f"{RUN}/dimuon",
                "--schema",
                "{{ params.schema }}",
                "--tree",
                "{{ params.tree }}",
                "--chunk-entries",
                "{{ params.chunk_entries }}",
                "--on-bad-file",
                "{{ params.on_bad_file }}",
                "--subset",
                "{{ subset_arg(params.subset, params.subsets, dag_run.logical_date) }}",
                "--master",
                "{{ params.spark_master }}",
                "--event-log-dir",
                f"{RUN}/spark-events",
            ],
            resources=Resources(cpu=1, memory="4Gi", executors=2),
            outlets=[Asset(name="cms_dimuon_histograms", uri="colliderflow://cms_dimuon/histograms")],
            pool="spark",
        )
    )
    collect_metrics(RUN, after=[dimuon])
