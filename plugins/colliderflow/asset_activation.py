"""Asset activations that would block the project's DAGs after their data root moves.

Airflow keeps one active asset per name and per URI, and only its scheduler retires an asset that no
DAG references any more. The DAGs' asset URIs name the real output location (colliderflow.assets), so
they change with the data root: another COLLIDERFLOW_DATA or storage root, or the URIs of an older
version. `airflow dags test` (make demo, the benchmarks) runs no scheduler: the previous asset stays
active, the DAG's new one cannot be activated, and every task producing it fails before it starts
("inactive assets in its inlets or outlets"). Retiring the activations of the assets the project's
DAGs last declared, and of unreferenced ones, lets the next parse activate what the DAG files declare
now; asset events and their history are kept."""

from __future__ import annotations

import sqlalchemy as sa

from colliderflow.dagkit import PROJECT_ROOT
from colliderflow.progress import metadata_engine

# an asset the project's DAGs produced last time they were parsed, or one that nothing references
RETIRED = """
DELETE FROM asset_active WHERE EXISTS (
  SELECT 1 FROM asset a
  WHERE a.name = asset_active.name AND a.uri = asset_active.uri AND (
    a.id IN (SELECT asset_id FROM task_outlet_asset_reference WHERE dag_id IN :dag_ids)
    OR (a.id NOT IN (SELECT asset_id FROM task_outlet_asset_reference)
        AND a.id NOT IN (SELECT asset_id FROM task_inlet_asset_reference)
        AND a.id NOT IN (SELECT asset_id FROM dag_schedule_asset_reference)
        AND a.id NOT IN (SELECT asset_id FROM asset_alias_asset))))
"""


def project_dag_ids() -> list[str]:
    return sorted(p.stem for p in (PROJECT_ROOT / "dags").glob("*.py"))


def release_asset_activations(env: dict[str, str]) -> int:
    """Retire the activations described above in the environment's metadata DB; how many."""
    engine = metadata_engine(env)
    statement = sa.text(RETIRED).bindparams(sa.bindparam("dag_ids", expanding=True))
    try:
        with engine.begin() as db:
            return db.execute(statement, {"dag_ids": project_dag_ids()}).rowcount
    finally:
        engine.dispose()
