"""Standalone pipeline stages, one module per stage (``python -m jobs.<stage> --help``).

Nothing under ``jobs`` imports Airflow: each stage runs the same way from a shell, a subprocess task,
a Spark driver or a Kubernetes pod.
"""
