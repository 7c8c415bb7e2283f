"""DL trigger (after CERN's SparkDLTrigger), nightly: Delphes ROOT -> Parquet features -> balanced,
scaled train/test sets -> TFRecords -> Inclusive Classifier -> per-class ROC AUC -> run report.
Thin on purpose: the stages live in jobs/, the task factory and conventions in plugins/colliderflow."""

from __future__ import annotations

import os

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Asset, Param

from colliderflow.backends import stage_task
from colliderflow.collect import collect_metrics
from colliderflow.dagkit import RUN_DIR, data_root, nightly
from colliderflow.params import common_params
from colliderflow.stages import Resources, Stage, flag
from jobs.dltrigger_schema import SAMPLES

RUN = RUN_DIR
SUBSET = "{{ subset_arg(params.subset, params.subsets, dag_run.logical_date) }}"
# the reference's steps 0.0005 -> 0.0002 (after epoch 2) -> 0.0001 (after 4), as fractions of the base rate
LR_STEPS = "{{ '2:%g,4:%g' % (params.learning_rate * 0.4, params.learning_rate * 0.2) }}"
SPARK_ARGS = ["--master", "{{ params.spark_master }}", "--event-log-dir", f"{RUN}/spark-events"]


def class_input(name: str) -> str:
    """The class's input: the run's own generated sample in demo mode, else the class's URL Param."""
    generated = f"run_dir(params.output_root, dag.dag_id, run_id) ~ '/samples/{SAMPLES[name]}'"
    return f"{name}={{{{ ({generated}) if params.demo_events > 0 else params.input_{name} }}}}"


def spark_resources() -> Resources:
    """Driver fixed; executors from the run's Params (the Kubernetes backend renders them)."""
    return Resources(
        cpu=1,
        memory="4Gi",
        executors="{{ params.executors }}",
        executor_cores="{{ params.executor_cores }}",
        executor_memory="{{ params.executor_memory }}",
    )


# GPUs per training worker are a property of the deployment (node pools, images), not of a run.
TRAIN_GPUS = int(os.environ.get("COLLIDERFLOW_TRAIN_GPUS", "0"))


with DAG(
    dag_id="dl_trigger",
    description="SparkDLTrigger: Delphes ROOT -> features -> prepared sets -> TFRecords -> GRU classifier",
    max_active_runs=2,
    **nightly("0 3 * * *"),
    tags=["dl-trigger", "spark", "tensorflow"],
    params={
        "demo_events": Param(
            0,
            type="integer",
            minimum=0,
            maximum=1_000_000,
            description="> 0: generate this many Delphes-style events per class into the run and use them",
        ),
        **{
            f"input_{name}": Param(
                f"{data_root()}/samples/delphes/{sample}",
                type="string",
                minLength=1,
                description=f"{sample}: ROOT files, glob or directory (local, s3://, oci://)",
            )
            for name, sample in SAMPLES.items()
        },
        "particle_scaling": Param(
            "global",
            enum=["global", "per-event"],
            description="global: padding stays 0 (masking, bucketing work); per-event: the reference",
        ),
        "scaler_fit": Param(
            "train", enum=["train", "all"], description="all: the reference (fit before split)"
        ),
        "seed": Param(42, type="integer", minimum=0),
        "epochs": Param(6, type="integer", minimum=1, maximum=200),
        "batch_size": Param(128, type="integer", minimum=1, maximum=65536, description="per worker"),
        "learning_rate": Param(
            0.0005,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            description="base Adam rate, x workers; the reference schedule lowers it after epochs 2 and 4",
        ),
        "workers": Param(1, type="integer", minimum=1, maximum=64, description="training workers (MWMS)"),
        "bucketing": Param(True, type="boolean", description="batch by particle count (global scaling only)"),
        "compression": Param("gzip", enum=["gzip", "none"], description="TFRecord shard compression"),
        **common_params(),
    },
) as dag:
    demo = ShortCircuitOperator(
        task_id="demo_mode",
        python_callable=lambda events: int(events) > 0,
        op_args=["{{ params.demo_events }}"],
        ignore_downstream_trigger_rules=False,  # only `generate` is skipped outside demo mode
    )
    generate = stage_task(
        Stage(
            task_id="generate",
            module="generate",
            args=["delphes", "--events", "{{ params.demo_events }}", "--files", "2",
                  "--seed", "{{ params.seed }}", "--output", f"{RUN}/samples"],
        )
    )  # fmt: skip
    ingest = stage_task(
        Stage(
            task_id="ingest",
            module="ingest",
            kind="spark",
            args=[*(a for name in SAMPLES for a in ("--input", class_input(name))),
                  "--output", f"{RUN}/features", "--subset", SUBSET,
                  "--on-bad-file", "{{ params.on_bad_file }}", *SPARK_ARGS],
            resources=spark_resources(),
            outlets=[Asset(name="dl_trigger_features", uri="colliderflow://dl_trigger/features")],
            pool="spark",
        ),
        trigger_rule="none_failed",
    )  # fmt: skip
    prepare = stage_task(
        Stage(
            task_id="prepare",
            module="prepare",
            kind="spark",
            args=["--input", f"{RUN}/features", "--output", f"{RUN}/prepared",
                  "--particle-scaling", "{{ params.particle_scaling }}",
                  "--scaler-fit", "{{ params.scaler_fit }}",
                  "--seed", "{{ params.seed }}", *SPARK_ARGS],
            resources=spark_resources(),
            outlets=[Asset(name="dl_trigger_prepared", uri="colliderflow://dl_trigger/prepared")],
            pool="spark",
        )
    )  # fmt: skip
    tfrecords = stage_task(
        Stage(
            task_id="tfrecords",
            module="tfrecords",
            kind="spark",
            args=["--input", f"{RUN}/prepared", "--output", f"{RUN}/tfrecords",
                  "--compression", "{{ params.compression }}", *SPARK_ARGS],
            resources=spark_resources(),
            pool="spark",
        )
    )  # fmt: skip
    train = stage_task(
        Stage(
            task_id="train",
            module="train",
            kind="tf-multiworker",
            args=["--train", f"{RUN}/tfrecords/train", "--test", f"{RUN}/tfrecords/test",
                  "--output", f"{RUN}/model", "--epochs", "{{ params.epochs }}",
                  "--batch-size", "{{ params.batch_size }}", "--lr", "{{ params.learning_rate }}",
                  "--lr-after", LR_STEPS,
                  "--seed", "{{ params.seed }}",
                  "--workers", "{{ params.workers }}",
                  flag("--bucketing", "params.bucketing and params.particle_scaling == 'global'")],
            resources=Resources(cpu=2, memory="8Gi", gpu=TRAIN_GPUS, workers=1),
            outlets=[Asset(name="dl_trigger_model", uri="colliderflow://dl_trigger/model")],
            pool="training",
        )
    )  # fmt: skip
    evaluate = stage_task(
        Stage(
            task_id="evaluate",
            module="evaluate",
            args=["--model", f"{RUN}/model/model.keras", "--test", f"{RUN}/tfrecords/test",
                  "--history", f"{RUN}/model/history.json", "--output", f"{RUN}/evaluation",
                  flag("--bucketing", "params.particle_scaling == 'global'")],
            resources=Resources(cpu=2, memory="8Gi"),
        )
    )  # fmt: skip
    demo >> generate >> ingest >> prepare >> tfrecords >> train >> evaluate
    collect_metrics(RUN, after=[evaluate])
