"""Standalone pipeline stages, one package per stage (``python -m jobs.<stage> --help``); what two or
more stages share lives in ``jobs.core``, the DL-trigger data contract in ``jobs.dltrigger_schema``.

Nothing under ``jobs`` imports Airflow: each stage runs the same way from a shell, a subprocess task,
a Spark driver or a Kubernetes pod.
"""
