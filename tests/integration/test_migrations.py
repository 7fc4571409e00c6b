"""The migrations build the schema the models describe, on PostgreSQL and on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from nyxcore.models import Base

ROOT = Path(__file__).resolve().parents[2]


def test_no_drift_between_models_and_migrations_on_postgresql(database):
    engine = create_engine(database.owner_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_twice_on_sqlite_is_a_no_op(tmp_path):
    env = {
        "NYXCORE_ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
        "PATH": "/usr/bin:/bin",
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "dev.db").stat().st_size > 0
