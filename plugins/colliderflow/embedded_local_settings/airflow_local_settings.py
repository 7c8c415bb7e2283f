"""Airflow local settings of the embedded default: on PYTHONPATH only when the metadata DB is SQLite
(colliderflow.environment), so a Postgres deployment and a user's own local settings are untouched."""

from colliderflow.sqlite_db import create_async_metadata_engine, create_metadata_engine

__all__ = ["create_async_metadata_engine", "create_metadata_engine"]
