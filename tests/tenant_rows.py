"""A row in every tenant-owned table, made from the metadata: isolation tests need no per-table code.

A new tenant feature's table is found here (it has a `tenant_id`) and filled with a valid row from
its column types, so the isolation tests cover it without being told about it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    Uuid,
    insert,
)
from sqlalchemy.engine import Connection

from nyxcore.models import Base

# Seeded by the tests themselves (a team needs its users, the team row and its owner first).
FOUNDATION = {"users", "tenants", "tenant_members"}


def tenant_tables() -> list[Table]:
    """Every table with a tenant_id column, parents before children."""
    return [table for table in Base.metadata.sorted_tables if "tenant_id" in table.c]


def _value(column: Column[Any], team: uuid.UUID, user: uuid.UUID, made: dict[str, Any]) -> Any:
    if column.name == "tenant_id":
        return team
    for key in column.foreign_keys:
        referred = key.column.table.name
        if referred == "users":
            return user
        if referred == "tenants":
            return team
        return made.get(referred) if column.nullable else made[referred]
    kind = column.type
    if isinstance(kind, Uuid):
        return uuid.uuid4()
    if isinstance(kind, Enum):
        return kind.enums[-1]
    if isinstance(kind, String | Text):
        length = getattr(kind, "length", None) or 64
        return (uuid.uuid4().hex * 2)[: min(length, 64)]
    if isinstance(kind, DateTime):
        return datetime.now(UTC) + timedelta(days=1)
    if isinstance(kind, Integer):
        return 0
    if isinstance(kind, LargeBinary):
        return b"\x00"
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, Boolean):
        return False
    raise TypeError(f"tests/tenant_rows.py cannot make a {kind!r} for {column}: teach it")


def row_for(table: Table, team: uuid.UUID, user: uuid.UUID, made: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid row of `table` for `team`: required columns filled by type, optional ones left out."""
    return {
        column.name: _value(column, team, user, made or {})
        for column in table.columns
        if column.server_default is None and not (column.nullable and not column.foreign_keys)
    }


def fill_tenant_tables(conn: Connection, team: uuid.UUID, user: uuid.UUID) -> dict[str, Any]:
    """Insert one row for `team` into every tenant table but the FOUNDATION; their ids by table."""
    made: dict[str, Any] = {}
    for table in tenant_tables():
        if table.name in FOUNDATION:
            continue
        row = row_for(table, team, user, made)
        conn.execute(insert(table).values(row))
        made[table.name] = row["id"]
    return made
