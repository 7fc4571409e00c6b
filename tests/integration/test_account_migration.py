"""Migration 0007 on PostgreSQL: audit events recorded before it get their actor's name back.

On a database of its own (the session's is at head already): migrated to 0005, given a user and
their audit events as the superuser, then upgraded to head as the owner role, whom FORCEd RLS
would otherwise keep from every team's events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore import create_app
from nyxcore.extensions import db
from tests import conftest
from tests.conftest import ADMIN_URL, _url, test_config
from tests.helpers import rows


@pytest.fixture
def fresh_database(database: conftest.TestDatabase) -> Iterator[conftest.TestDatabase]:
    name = f"{database.name}_m{uuid.uuid4().hex[:6]}"
    info = replace(
        database,
        name=name,
        admin_url=_url(ADMIN_URL, database=name),
        owner_url=_url(ADMIN_URL, user=database.owner_role, database=name),
        app_url=_url(ADMIN_URL, user=database.app_role, database=name),
    )
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} OWNER {database.owner_role}"))
        yield info
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


def _migrate(info: conftest.TestDatabase, revision: str) -> None:
    app = create_app(test_config(info))
    with app.app_context():
        upgrade(revision=revision)
        db.engine.dispose()


def _seed(admin: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    user, team = uuid.uuid4(), uuid.uuid4()
    with admin.begin() as conn:
        conn.execute(
            text("INSERT INTO users (id, email, name, password_hash) VALUES (:u, 'ada@example.com', 'Ada', 'x')"),
            {"u": user},
        )
        conn.execute(text("INSERT INTO tenants (id, name, slug) VALUES (:t, 'Team', 'team')"), {"t": team})
        conn.execute(
            text(
                "INSERT INTO audit_events (id, tenant_id, actor_id, action, details) VALUES "
                "(gen_random_uuid(), :t, :u, 'team.created', '{}'), "
                "(gen_random_uuid(), :t, NULL, 'member.left', '{}')"
            ),
            {"t": team, "u": user},
        )
    return user, team


def test_the_upgrade_gives_existing_events_their_actors_name_and_keeps_rls_forced(fresh_database):
    _migrate(fresh_database, "0005")
    admin = create_engine(fresh_database.admin_url)
    try:
        user, _ = _seed(admin)
        _migrate(fresh_database, "head")
        events = rows(admin, "SELECT actor_id, actor_name, action FROM audit_events ORDER BY action")
        assert [(e.actor_id, e.actor_name, e.action) for e in events] == [
            (None, None, "member.left"),  # nobody to name
            (user, "Ada", "team.created"),
        ]
        forced = rows(admin, "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'audit_events'")
        assert forced[0][0] is True
    finally:
        admin.dispose()
