"""The session load of every signed-in request through `nyxcore_signed_in` (migration 0020, issue 15).

On PostgreSQL the user, their live session, the active membership with its team and the switcher's
teams come from a PL/pgSQL function, planned once per connection. These tests pin down that it loads
what the ORM statement it replaces loads, that an ended session (or someone else's) still loads
nothing, and that row-level security still applies inside it (it runs as the app role).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.dialects import postgresql

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.services import sessions
from nyxcore.services.teams import SWITCHER_TEAMS
from tests.helpers import rows, scalar

HOUR = timedelta(hours=1)


def _start(app, user_id: uuid.UUID) -> str:
    """A new live session of `user_id`, committed; its raw token."""
    with app.app_context(), tenancy.tenant_context(user_id=user_id):
        token = sessions.start(user_id, user_agent="pytest", ip_address="127.0.0.1", lifetime=HOUR)
        db.session.commit()
    return token


def _load(app, user_id: uuid.UUID, token: str, wanted: uuid.UUID | None = None) -> sessions.SignedIn | None:
    with app.app_context(), tenancy.tenant_context(user_id=user_id):
        return sessions.load(user_id, token, idle=HOUR, wanted_tenant_id=wanted)


def _values(instance: object) -> dict[str, object]:
    """The loaded column attributes of an ORM object."""
    state = inspect(instance)
    return {attr.key: attr.loaded_value for attr in state.attrs if attr.key in state.mapper.column_attrs}


def test_the_function_loads_what_the_orm_statement_loads(app, make_user):
    """Same user, session, membership, team and switcher teams as `_LIVE_SESSION` (SQLite's statement),
    column by column: a column the models gain and the function lacks fails here (and in the statement)."""
    user = make_user(name="Loaded Twice")
    token = _start(app, user.user_id)
    now = sessions._now()
    params = {
        "token_hash": sessions._hash(token),
        "user_id": user.user_id,
        "now": now,
        "idle_since": now - HOUR,
        "wanted_tenant_id": user.team_id,
        "max_choices": SWITCHER_TEAMS + 1,
    }
    loaded = []
    for statement in (sessions._LIVE_SESSION_CALL, sessions._LIVE_SESSION):
        with app.app_context(), tenancy.tenant_context(user_id=user.user_id):
            account, session_id, last_seen_at, membership, *team, choices = db.session.execute(statement, params).one()
            loaded.append(
                (
                    _values(account),
                    session_id,
                    last_seen_at,
                    _values(membership),
                    _values(team[0] if team else membership.tenant),
                    choices,
                )
            )
    through_function, through_orm = loaded
    assert through_function == through_orm
    assert through_function[3]["tenant_id"] == user.team_id


def _revoke(conn, user_id: uuid.UUID) -> None:
    conn.execute(text("UPDATE user_sessions SET revoked_at = now() WHERE user_id = :u"), {"u": user_id})


def _expire(conn, user_id: uuid.UUID) -> None:
    conn.execute(text("UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE user_id = :u"), {"u": user_id})


def _idle(conn, user_id: uuid.UUID) -> None:
    conn.execute(text("UPDATE user_sessions SET last_seen_at = now() - interval '2 hours' WHERE user_id = :u"), {"u": user_id})


@pytest.mark.parametrize("end", [_revoke, _expire, _idle], ids=["revoked", "expired", "idle"])
def test_an_ended_session_loads_nothing(app, make_user, admin_engine, end):
    user = make_user()
    token = _start(app, user.user_id)
    assert _load(app, user.user_id, token) is not None
    with admin_engine.begin() as conn:
        end(conn, user.user_id)
    assert _load(app, user.user_id, token) is None


def test_another_users_token_loads_nothing(app, make_user):
    """Neither someone else's token under one's own id, nor one's own token under someone else's id."""
    mine, theirs = make_user(), make_user()
    my_token, their_token = _start(app, mine.user_id), _start(app, theirs.user_id)
    assert _load(app, mine.user_id, their_token) is None
    assert _load(app, theirs.user_id, my_token) is None
    assert _load(app, mine.user_id, my_token) is not None


def test_a_team_not_ones_own_is_not_loaded_as_the_membership(app, make_user):
    """Asking for another user's team gives no membership (and leaves the session live)."""
    mine, theirs = make_user(), make_user()
    signed_in = _load(app, mine.user_id, _start(app, mine.user_id), wanted=theirs.team_id)
    assert signed_in is not None and signed_in.membership is None
    assert [choice.tenant_id for choice in signed_in.choices] == [mine.team_id]


def test_row_level_security_applies_inside_the_function(app, make_user, app_engine):
    """As the app role, the function shows a session only to the user the context names: called with
    another user (or no one) in `app.user_id`, the right token and id return no row and no team."""
    owner, other = make_user(), make_user()
    token = _start(app, owner.user_id)
    call = (
        "SELECT count(*) FROM nyxcore_signed_in(:token_hash, :user_id, now(), now() - interval '1 hour', NULL, 21)"
    )
    params = {"token_hash": sessions._hash(token), "user_id": owner.user_id}
    for acting, expected in ((owner.user_id, 1), (other.user_id, 0), (None, 0)):
        with app_engine.begin() as conn:
            conn.execute(text("SELECT set_config('app.user_id', :u, true)"), {"u": str(acting or "")})
            assert scalar(conn, call, **params) == expected, acting
    # And the switcher's teams of the owner never reach another acting user.
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.user_id', :u, true)"), {"u": str(other.user_id)})
        leaked = rows(
            conn,
            "SELECT choices FROM nyxcore_signed_in(:h, :u, now(), now() - interval '1 hour', :t, 21)",
            h=sessions._hash(token),
            u=owner.user_id,
            t=owner.team_id,
        )
    assert leaked == []


def test_the_statement_around_the_function_reads_the_function_alone():
    """PostgreSQL parses, analyses and plans the outer statement on every request (psycopg2 sends it
    with literals): it reads the function's row and no table. (Its entities are LATERAL projections of
    that row: a flat select whose columns were made proxies of the models' through a private SQLAlchemy
    attribute failed to load users.id under concurrent first requests, a 500 seen through PgBouncer.)"""
    sql = str(sessions._LIVE_SESSION_CALL.compile(dialect=postgresql.dialect()))
    assert sql.split("FROM", 1)[1].strip().startswith("nyxcore_signed_in(")
    assert not any(f" {table} " in sql for table in ("users", "user_sessions", "tenant_members", "tenants"))


def test_the_function_runs_as_its_caller_with_a_plan_kept_per_connection(admin_engine):
    """SECURITY INVOKER (row-level security on), and a generic plan forced: planned once per connection."""
    [(definer, config)] = rows(admin_engine, "SELECT prosecdef, proconfig FROM pg_proc WHERE proname = 'nyxcore_signed_in'")
    assert definer is False
    assert "plan_cache_mode=force_generic_plan" in config


def test_last_seen_is_written_at_most_every_five_minutes(make_user, login_as, admin_engine):
    """A page seen 6 minutes after the last write records the visit; one 2 minutes after it writes nothing."""
    user = make_user()
    client = login_as(user)
    for age, written in (("6 minutes", True), ("2 minutes", False)):
        with admin_engine.begin() as conn:
            conn.execute(
                text(f"UPDATE user_sessions SET last_seen_at = now() - interval '{age}' WHERE user_id = :u"),
                {"u": user.user_id},
            )
        assert client.get("/notes/").status_code == 200
        seen_ago = scalar(
            admin_engine, "SELECT extract(epoch FROM now() - last_seen_at) FROM user_sessions WHERE user_id = :u", u=user.user_id
        )
        assert (seen_ago < 60) is written, (age, seen_ago)
