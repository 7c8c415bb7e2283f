"""DL trigger (after CERN's SparkDLTrigger), nightly: Delphes ROOT -> Parquet features -> balanced,
scaled train/test sets -> TFRecords -> Inclusive Classifier -> per-class ROC AUC -> run report.
Thin on purpose: the stages live in jobs/, the task factory and conventions in plugins/colliderflow."""

from __future__ import annotations

import os

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG

from colliderflow.assets import output_asset
from colliderflow.backends import stage_task
from colliderflow.collect import collect_metrics
from colliderflow.dag_docs import attach_docs
from colliderflow.dagkit import RUN_DIR, data_root, nightly, results_group, task_group
from colliderflow.inputs import check_inputs
from colliderflow.params import (
    common_params,
    engine_args,
    locations_schema,
    param,
    spark_args,
    spark_resources,
)
from colliderflow.partitioning import MANIFESTS, partition_task
from colliderflow.quality import quality_gate
from colliderflow.stages import Resources, Stage, each, flag, option
from jobs.dltrigger_schema import CLASS_TITLES, CLASSES, SAMPLES

RUN = RUN_DIR
SPARK_ARGS = spark_args(RUN)
DEMO_MODE = "{{ params.demo_events > 0 }}"
# the evaluation of this DAG's previous successful run, to compare the AUC with ("" for the first run)
PREVIOUS_EVALUATION = "previous_run_dir(ti, params.output_root, dag.dag_id, 'evaluation')"


def class_input(name: str) -> str:
    """The class's inputs as the partition task lists them (a Jinja expression): the run's own
    generated sample in demo mode, else the class's list Param."""
    generated = f"[run_dir(params.output_root, dag.dag_id, run_id) ~ '/samples/{SAMPLES[name]}']"
    return f"({generated} if params.demo_events > 0 else params.input_{name})"


# GPUs per training worker are a property of the deployment (node pools, images), not of a run.
TRAIN_GPUS = int(os.environ.get("COLLIDERFLOW_TRAIN_GPUS", "0"))


with DAG(
    dag_id="dl_trigger",
    description="Delphes ROOT -> features -> TFRecords -> GRU classifier -> ROC AUC",
    max_active_runs=2,
    **nightly("0 3 * * *"),
    tags=["dl-trigger", "spark", "tensorflow"],
    params={
        **{
            f"input_{name}": param(
                [f"{data_root()}/samples/delphes/{SAMPLES[name]}"],
                f"{title} input",
                f"{SAMPLES[name]}: ROOT files, globs or directories, one per line (paths or URLs)",
                "Input",
                **locations_schema(),
            )
            for name, title in zip(CLASSES, CLASS_TITLES, strict=True)
        },
        "demo_events": param(
            0,
            "Generate demo events",
            "> 0: generate this many Delphes-style events per class into the run, instead of the inputs",
            "Input",
            type="integer",
            minimum=0,
            maximum=1_000_000,
        ),
        "particle_scaling": param(
            "global",
            "Particle scaling",
            "global: one scaler per feature, padding stays 0 (masking, bucketing work); "
            "per-event: the reference's",
            "Physics",
            enum=["global", "per-event"],
        ),
        "scaler_fit": param(
            "train",
            "Fit the scalers on",
            "train: the training set only; all: every event before the split (the reference)",
            "Physics",
            enum=["train", "all"],
        ),
        "seed": param(
            42,
            "Random seed",
            "seeds the demo sample, the train/test split, the class balancing and the training",
            "Training",
            type="integer",
            minimum=0,
        ),
        "train_window": param(
            0,
            "Partitions to learn from",
            "0: the features of every partition so far; N: the last N partitions only",
            "Training",
            type="integer",
            minimum=0,
            maximum=100_000,
        ),
        "epochs": param(
            6,
            "Epochs",
            "passes over the training set; the learning rate steps down after epochs 2 and 4",
            "Training",
            type="integer",
            minimum=1,
            maximum=200,
        ),
        "batch_size": param(
            None,
            "Batch size",
            "events per batch and worker; empty: auto (the reference's 128 from ~5,000 events, less below)",
            "Training",
            type=["null", "integer"],
            minimum=1,
            maximum=65536,
        ),
        "learning_rate": param(
            None,
            "Learning rate",
            "base Adam rate (x workers), lowered after epochs 2 and 4; empty: auto (5e-4 x 128 / batch)",
            "Training",
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
        ),
        "min_auc": param(
            0.9,
            "Minimum AUC",
            "per class; below it the run fails after its report (0: no floor)",
            "Quality",
            type="number",
            minimum=0,
            maximum=1,
        ),
        "max_auc_drop": param(
            0.02,
            "Tolerated AUC drop",
            "per class, against the previous successful run: a larger drop is flagged in the report",
            "Quality",
            type="number",
            minimum=0,
            maximum=1,
        ),
        "workers": param(
            1,
            "Training workers",
            "MultiWorkerMirroredStrategy workers: local processes, or pods on Kubernetes",
            "Training",
            type="integer",
            minimum=1,
            maximum=64,
        ),
        "bucketing": param(
            True,
            "Batch by particle count",
            "batches of events with similar particle counts, less padding (global scaling only)",
            "Training",
            type="boolean",
        ),
        **common_params(),
        "compression": param(
            "gzip",
            "TFRecord compression",
            "compression of the TFRecord shards the training reads",
            "Output",
            enum=["gzip", "none"],
        ),
        "particle_layout": param(
            "auto",
            "Particle layout",
            "ragged: real rows only (global scaling); padded: 801 x 19; auto: ragged unless per-event "
            "scaling",
            "Output",
            enum=["auto", "ragged", "padded"],
        ),
    },
) as dag:
    check = check_inputs(
        {f"input_{name}": f"{{{{ params.input_{name} | tojson }}}}" for name in SAMPLES}, DEMO_MODE
    )
    with task_group("demo_sample", "demo mode only: generates the run's own Delphes-style sample"):
        demo = ShortCircuitOperator(
            task_id="demo_mode",
            python_callable=lambda generated: generated == "True",
            op_args=[DEMO_MODE],
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
            args=[each(MANIFESTS, "--manifest"), "--output", f"{RUN}/features",
                  "--on-bad-file", "{{ params.on_bad_file }}", *engine_args(), *SPARK_ARGS],
            resources=spark_resources(),
            outlets=[output_asset("dl_trigger_features", "dl_trigger", "features")],
            pool="spark",
        ),
    )  # fmt: skip
    prepare = stage_task(
        Stage(
            task_id="prepare",
            module="prepare",
            kind="spark",
            args=[each(MANIFESTS, "--manifest"), "--window", "{{ params.train_window }}",
                  "--output", f"{RUN}/prepared",
                  "--particle-scaling", "{{ params.particle_scaling }}",
                  "--scaler-fit", "{{ params.scaler_fit }}",
                  "--layout", "{{ params.particle_layout }}",
                  "--seed", "{{ params.seed }}", *engine_args(), *SPARK_ARGS],
            resources=spark_resources(),
            outlets=[output_asset("dl_trigger_prepared", "dl_trigger", "prepared")],
            pool="spark",
        )
    )  # fmt: skip
    tfrecords = stage_task(
        Stage(
            task_id="tfrecords",
            module="tfrecords",
            kind="spark",
            args=["--input", f"{RUN}/prepared", "--output", f"{RUN}/tfrecords",
                  "--compression", "{{ params.compression }}", *engine_args(), *SPARK_ARGS],
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
                  *option("--batch-size", "params.batch_size"), *option("--lr", "params.learning_rate"),
                  "--seed", "{{ params.seed }}",
                  "--workers", "{{ params.workers }}",
                  flag("--bucketing", "params.bucketing and params.particle_scaling == 'global'")],
            resources=Resources(cpu=2, memory="8Gi", gpu=TRAIN_GPUS, workers=1),
            outlets=[output_asset("dl_trigger_model", "dl_trigger", "model")],
            pool="training",
        )
    )  # fmt: skip
    evaluate = stage_task(
        Stage(
            task_id="evaluate",
            module="evaluate",
            args=["--model", f"{RUN}/model/model.keras", "--test", f"{RUN}/tfrecords/test",
                  "--history", f"{RUN}/model/history.json", "--output", f"{RUN}/evaluation",
                  flag("--bucketing", "params.particle_scaling == 'global'"),
                  "--min-auc", "{{ params.min_auc }}", "--max-auc-drop", "{{ params.max_auc_drop }}",
                  *option("--baseline", PREVIOUS_EVALUATION)],
            resources=Resources(cpu=2, memory="8Gi"),
        )
    )  # fmt: skip
    partition = partition_task({name: class_input(name) for name in SAMPLES}, trigger_rule="none_failed")
    check >> demo >> generate >> partition >> ingest >> prepare >> tfrecords >> train >> evaluate
    with results_group():
        quality_gate(RUN, after=collect_metrics(RUN, after=[evaluate]))
    attach_docs(dag, __file__)
