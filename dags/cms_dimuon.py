"""CMS di-muon reduction, nightly: ROOT files -> mass spectrum, muon histograms, cut-flow, metrics.
Thin on purpose: the stage lives in jobs/dimuon/, the task factory in plugins/colliderflow."""

from __future__ import annotations

from airflow.sdk import DAG, Asset, Param

from colliderflow.backends import stage_task
from colliderflow.collect import collect_metrics
from colliderflow.dagkit import RUN_DIR, data_root, nightly
from colliderflow.params import common_params
from colliderflow.stages import Resources, Stage

RUN = RUN_DIR

with DAG(
    dag_id="cms_dimuon",
    description="CMS di-muon spectrum (J/psi ... Z) with cut-flow, from NanoAOD/AOD/flat ROOT files",
    max_active_runs=4,
    **nightly("0 2 * * *"),
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
