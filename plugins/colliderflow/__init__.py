"""Airflow side of colliderflow: stage-to-task factory per backend, params, demo runner."""
