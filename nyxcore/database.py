"""Engine setup per dialect: the tenant context on PostgreSQL, sane transactions on SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from nyxcore import tenancy


def configure_engine(engine: Engine) -> None:
    """Install the tenant-context events (PostgreSQL) or the SQLite transaction fixes."""
    if engine.dialect.name == "postgresql":
        tenancy.install_engine_events(engine)
    elif engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _sqlite_connect):
        # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself.
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")
