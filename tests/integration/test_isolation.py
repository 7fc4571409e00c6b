"""Row-level security holds even when application code is wrong: raw SQL as the app role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tests.helpers import count
from tests.tenant_rows import fill_tenant_tables, row_for, tenant_tables

TENANT_TABLE_NAMES = sorted(table.name for table in tenant_tables())


@dataclass
class Seeded:
    team_a: uuid.UUID
    team_b: uuid.UUID
    user_a: uuid.UUID
    user_b: uuid.UUID


def _seed_team(conn: Connection, name: str) -> tuple[uuid.UUID, uuid.UUID]:
    team, user = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        text("INSERT INTO users (id, email, name, password_hash) VALUES (:u, :e, :n, 'x')"),
        {"u": user, "e": f"{name}-{user.hex[:6]}@example.com", "n": name},
    )
    conn.execute(
        text("INSERT INTO tenants (id, name, slug) VALUES (:t, :n, :s)"),
        {"t": team, "n": name, "s": f"{name}-{team.hex[:6]}"},
    )
    conn.execute(
        text("INSERT INTO tenant_members (id, tenant_id, user_id, role) VALUES (:i, :t, :u, 'owner')"),
        {"i": uuid.uuid4(), "t": team, "u": user},
    )
    fill_tenant_tables(conn, team, user)  # every other tenant table, found from the metadata
    return team, user


@pytest.fixture
def seeded(admin_engine: Engine) -> Seeded:
    with admin_engine.begin() as conn:
        team_a, user_a = _seed_team(conn, "alpha")
        team_b, user_b = _seed_team(conn, "beta")
    return Seeded(team_a, team_b, user_a, user_b)



def _as_team(conn: Connection, team: uuid.UUID | None, user: uuid.UUID | None = None) -> None:
    conn.execute(
        text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
        {"t": str(team) if team else "", "u": str(user) if user else ""},
    )


def _count(conn: Connection, table: str, team: uuid.UUID) -> int:
    column = "id" if table == "tenants" else "tenant_id"
    return count(conn, f"SELECT count(*) FROM {table} WHERE {column} = :t", t=team)


@pytest.mark.parametrize("table", [*TENANT_TABLE_NAMES, "tenants"])
def test_other_teams_rows_are_invisible_and_untouchable(app_engine, admin_engine, seeded, table):
    column = "id" if table == "tenants" else "tenant_id"
    with app_engine.begin() as conn:
        _as_team(conn, seeded.team_a)
        assert _count(conn, table, seeded.team_a) >= 1, "own rows are visible"
        assert _count(conn, table, seeded.team_b) == 0
        updated = conn.execute(
            text(f"UPDATE {table} SET {column} = {column} WHERE {column} = :t"), {"t": seeded.team_b}
        )
        assert updated.rowcount == 0
        deleted = conn.execute(text(f"DELETE FROM {table} WHERE {column} = :t"), {"t": seeded.team_b})
        assert deleted.rowcount == 0
    with admin_engine.connect() as conn:
        assert _count(conn, table, seeded.team_b) >= 1, "team B's rows survived"


@pytest.mark.parametrize("table", TENANT_TABLE_NAMES)
def test_moving_own_rows_into_another_team_is_rejected(app_engine, seeded, table):
    with app_engine.connect() as conn, conn.begin():
        _as_team(conn, seeded.team_a)
        # The keep_tenant_id trigger refuses first; the policy's WITH CHECK would too.
        with pytest.raises(DBAPIError, match=r"row-level security|tenant_id of a .* row cannot change"):
            conn.execute(
                text(f"UPDATE {table} SET tenant_id = :b WHERE tenant_id = :a"),
                {"a": seeded.team_a, "b": seeded.team_b},
            )


@pytest.mark.parametrize("table", tenant_tables(), ids=lambda table: table.name)
def test_inserting_into_another_team_is_rejected(app_engine, seeded, table):
    # A valid row of every tenant table (made from its columns), written for team B from team A.
    row = row_for(table, seeded.team_b, seeded.user_a)
    with app_engine.connect() as conn, conn.begin():
        _as_team(conn, seeded.team_a, seeded.user_a)
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(insert(table).values(row))


@pytest.mark.parametrize("table", [*TENANT_TABLE_NAMES, "tenants"])
def test_no_context_means_no_rows(app_engine, seeded, table):
    with app_engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


def test_ended_context_does_not_leak_into_the_next_transaction(app_engine, seeded):
    engine = create_engine(app_engine.url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            _as_team(conn, seeded.team_a)
            assert conn.execute(text("SELECT count(*) FROM notes")).scalar_one() == 1
        with engine.connect() as conn:  # the same pooled connection, a new transaction
            assert conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar_one() == ""
            assert conn.execute(text("SELECT count(*) FROM notes")).scalar_one() == 0
    finally:
        engine.dispose()


@pytest.mark.committed  # it checks the pool's connections after a real commit
def test_pooled_connection_after_a_request_sees_nothing(app, make_user, login_as):
    from nyxcore.extensions import db

    account = make_user()
    client = login_as(account)
    assert client.get("/team/").status_code == 200
    with app.app_context():
        engine = db.engine
        assert engine.pool.checkedout() == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar_one() in (
                "",
                None,
            )
            assert conn.execute(text("SELECT count(*) FROM tenant_members")).scalar_one() == 0


@pytest.mark.committed  # settings made for the session outlive a transaction: a connection of the app's pool
def test_the_context_overrides_every_setting_made_for_the_session(app, seeded):
    """The context sets all five settings in each transaction, the empty ones too (SET LOCAL): values
    left on a connection for the session (by anything) never show through a request's context."""
    from nyxcore import tenancy
    from nyxcore.extensions import db

    left = {
        "app.user_id": str(seeded.user_b),
        "app.tenant_id": str(seeded.team_b),
        "app.invite_token_hash": "b" * 64,
        "app.outbox_id": str(uuid.uuid4()),
        "app.account_token_hash": "c" * 64,
    }
    with app.app_context(), db.engine.connect() as conn:
        try:
            for name, value in left.items():
                conn.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value})
            conn.commit()
            with tenancy.tenant_context(user_id=seeded.user_a, tenant_id=seeded.team_a):
                assert conn.execute(text("SELECT count(*) FROM notes")).scalar_one() == 1
                assert _count(conn, "notes", seeded.team_b) == 0
                settings = conn.execute(text("SELECT " + ", ".join(f"current_setting('{n}', true)" for n in left)))
                assert tuple(settings.one()) == (str(seeded.user_a), str(seeded.team_a), "", "", "")
            conn.rollback()
        finally:
            conn.invalidate()  # the session's settings go with the connection, not back to the pool


def test_user_sees_own_memberships_in_every_team_but_no_one_elses(app_engine, admin_engine, seeded):
    with admin_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenant_members (id, tenant_id, user_id, role) VALUES (:i, :b, :u, 'viewer')"),
            {"i": uuid.uuid4(), "b": seeded.team_b, "u": seeded.user_a},
        )
    with app_engine.begin() as conn:
        _as_team(conn, seeded.team_a, seeded.user_a)
        rows = conn.execute(
            text("SELECT tenant_id, user_id FROM tenant_members WHERE tenant_id = :b"), {"b": seeded.team_b}
        ).all()
        assert [(r.tenant_id, r.user_id) for r in rows] == [(seeded.team_b, seeded.user_a)]
        names = conn.execute(text("SELECT name FROM tenants ORDER BY name")).scalars().all()
        assert names == ["alpha", "beta"]  # the switcher may name team B, and nothing in it
        assert _count(conn, "notes", seeded.team_b) == 0


def test_invitation_is_visible_only_to_whoever_presents_its_token(app_engine, admin_engine, seeded):
    token_hash = "a" * 64
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE invitations SET token_hash = :h WHERE tenant_id = :b"),
            {"h": token_hash, "b": seeded.team_b},
        )
    with app_engine.begin() as conn:
        _as_team(conn, seeded.team_a, seeded.user_a)
        assert _count(conn, "invitations", seeded.team_b) == 0
        conn.execute(text("SELECT set_config('app.invite_token_hash', :h, true)"), {"h": "b" * 64})
        assert _count(conn, "invitations", seeded.team_b) == 0
        conn.execute(text("SELECT set_config('app.invite_token_hash', :h, true)"), {"h": token_hash})
        assert _count(conn, "invitations", seeded.team_b) == 1
        assert _count(conn, "tenants", seeded.team_b) == 1
        assert _count(conn, "notes", seeded.team_b) == 0


def test_app_role_cannot_turn_row_security_off(app_engine, seeded):
    with app_engine.connect() as conn, conn.begin():
        conn.execute(text("SET row_security = off"))
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(text("SELECT count(*) FROM notes")).scalar_one()


def test_app_role_owns_nothing_and_cannot_bypass_rls(admin_engine, database):
    with admin_engine.connect() as conn:
        role = conn.execute(
            text(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :r"
            ),
            {"r": database.app_role},
        ).one()
        assert tuple(role) == (False, False, False, False)
        owned = conn.execute(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = :r"
            ),
            {"r": database.app_role},
        ).scalar_one()
        assert owned == 0
        can_create = conn.execute(
            text("SELECT has_schema_privilege(:r, 'public', 'CREATE')"), {"r": database.app_role}
        ).scalar_one()
        assert can_create is False


def test_every_table_with_tenant_id_has_forced_rls_and_policies(admin_engine):
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                  AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                       OR c.relname = 'tenants')
                """
            )
        ).all()
    tables = {row.relname for row in rows}
    assert tables >= {*TENANT_TABLE_NAMES, "tenants"}
    unprotected = [
        row.relname for row in rows if not (row.relrowsecurity and row.relforcerowsecurity and row.policies)
    ]
    assert unprotected == []
