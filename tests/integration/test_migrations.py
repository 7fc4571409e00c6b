"""The migrations build the schema the models describe on PostgreSQL (SQLite: tests/unit/test_dev_start.py)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from nyxcore.models import Base


def test_no_drift_between_models_and_migrations_on_postgresql(database):
    engine = create_engine(database.owner_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"

