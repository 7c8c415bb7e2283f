"""Standalone pipeline stages, one package per stage (``python -m jobs.<stage> --help``); what two or
more stages share lives in ``jobs.core``, the DL-trigger data contract in ``jobs.dltrigger_schema``.

Nothing under ``jobs`` imports Airflow: each stage runs the same way from a shell, a subprocess task,
a Spark driver or a Kubernetes pod.

A module that imports TensorFlow imports ``jobs.core.tf_env`` first (the XRootD client before
TensorFlow, quiet TensorFlow logs); nothing is imported here, so the Airflow side, which imports
``jobs.core.cli``, loads neither.
"""
