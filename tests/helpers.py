"""Small helpers the tests share: free loopback ports and raw SQL under or past row-level security.

The SQL helpers take an Engine (a connection of their own, closed afterwards: what another process
would see, so only committed rows) or a Connection (the caller's transaction, with whatever context
it set). With the superuser `admin_engine` they look under RLS; with an app-role engine they show
what the policies let through.

    assert count(admin_engine, "SELECT count(*) FROM users WHERE email = :e", e=address) == 1
    role = scalar_or_none(admin_engine, "SELECT role FROM tenant_members WHERE id = :i", i=member)
"""

from __future__ import annotations

import html
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, event, text
from sqlalchemy.engine import Connection, Engine

from nyxcore.pagination import Key

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the kernel's choice), for a server a test starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _connection(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


def rows(bind: Engine | Connection, sql: str, **params: Any) -> list[Row[Any]]:
    """Every row of `sql` (attribute and index access: `row.role`, `tuple(row)`)."""
    with _connection(bind) as conn:
        return list(conn.execute(text(sql), params))


def dicts(bind: Engine | Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of `sql` as a dict, for comparing with expected rows."""
    with _connection(bind) as conn:
        return [dict(row) for row in conn.execute(text(sql), params).mappings()]


def scalar(bind: Engine | Connection, sql: str, **params: Any) -> Any:
    """The one value of `sql`'s one row; fails unless there is exactly one row."""
    with _connection(bind) as conn:
        return conn.execute(text(sql), params).scalar_one()


def scalar_or_none(bind: Engine | Connection, sql: str, **params: Any) -> Any:
    """The first column of `sql`'s first row, or None when there is no row."""
    with _connection(bind) as conn:
        return conn.execute(text(sql), params).scalar()


def count(bind: Engine | Connection, sql: str, **params: Any) -> int:
    """The number a `SELECT count(*) ...` returns."""
    return int(scalar(bind, sql, **params))


def member_id(bind: Engine | Connection, team_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
    """The id of the user's membership row in the team."""
    found: uuid.UUID = scalar(
        bind, "SELECT id FROM tenant_members WHERE tenant_id = :t AND user_id = :u", t=team_id, u=user_id
    )
    return found


def insert_invitation(
    engine: Engine, team_id: uuid.UUID, inviter: uuid.UUID, email: str, *,
    token_hash: str | None = None, revoked: bool = False,
) -> uuid.UUID:
    """An open invitation written as the superuser (no outbox row), valid for a day; its id."""
    invitation = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, expires_at, revoked_at)"
                " VALUES (:i, :t, :h, :e, 'member', :u, now() + interval '1 day', CASE WHEN :r THEN now() END)"
            ),
            {"i": invitation, "t": team_id, "h": token_hash or uuid.uuid4().hex * 2, "e": email, "u": inviter,
             "r": revoked},
        )
    return invitation


def role_of(bind: Engine | Connection, team_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The user's role in the team, or None when they are not a member."""
    role: str | None = scalar_or_none(
        bind, "SELECT role FROM tenant_members WHERE tenant_id = :t AND user_id = :u", t=team_id, u=user_id
    )
    return role


@contextmanager
def _recording(app: Any, entry: Callable[[str, Any], Any]) -> Iterator[list[Any]]:
    """`entry(statement, parameters)` of each SQL statement the app sends while the block runs, in order, as
    it leaves for the server (the listener runs after tenancy's, installed with the app: its prefix is on)."""
    from nyxcore.extensions import db

    recorded: list[Any] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        recorded.append(entry(statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield recorded
    finally:
        event.remove(engine, "before_cursor_execute", record)


def recorded_statements(app: Any) -> AbstractContextManager[list[str]]:
    """The SQL statements the app sends while the block runs, in order."""
    return _recording(app, lambda statement, _parameters: statement)


def recorded_executions(app: Any) -> AbstractContextManager[list[tuple[str, Any]]]:
    """The SQL statements the app sends while the block runs, each with the parameters psycopg2 fills in."""
    return _recording(app, lambda statement, parameters: (statement, parameters))


def statements_for(app: Any, client: Any, path: str, *, mentioning: str = "") -> int:
    """How many SQL statements (those `mentioning` a text, if given) the app sends to answer GET
    `path` for `client` (which must get a 200)."""
    with recorded_statements(app) as statements:
        assert client.get(path).status_code == 200
    return sum(mentioning in statement for statement in statements)


# A member list key after every member (`/team/?after=...`): an empty page that must still count.
PAST_THE_END = Key(datetime(2100, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


def refused_page(client: Any, response: Any, location: str) -> str:
    """A refused POST answered post/redirect/get: a 303 to `location`; that page (entities decoded), which says why."""
    assert (response.status_code, response.location) == (303, location)
    page = client.get(location)
    assert page.status_code == 200
    return html.unescape(page.get_data(as_text=True))


CHECKOUT = Path(__file__).resolve().parent.parent


def entry_point_says(code: str, **environment: str) -> str:
    """The last line `python -c code` prints, run in a process of its own in the checkout (where the
    entry points wsgi.py and worker.py are), in the testing environment plus `environment`."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=CHECKOUT,
        env={**os.environ, "NYXCORE_ENV": "testing", "DATABASE_URL": "sqlite://", "REDIS_URL": "", **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def explained_plans(
    admin_engine: Engine,
    app_role: str,
    statement: str,
    parameters: Any,
    *,
    context: dict[str, str],
    calls: int = 1,
    analyze: bool = False,
) -> list[dict[str, Any]]:
    """The plan documents ("Query Text", "Plan", ...) auto_explain reports for every statement that
    `statement` runs, those inside PL/pgSQL functions included (an EXPLAIN of a function's call shows
    only the call), on the last of `calls` runs: the plans a connection keeps.

    auto_explain is loaded by the superuser, then SET ROLE `app_role` with `context` (app.* settings)
    set, so row-level security applies as for the app; all of it is rolled back afterwards.
    """
    connection = admin_engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("LOAD 'auto_explain'")
        settings = ["log_min_duration = 0", "log_nested_statements = on", "log_format = json", "log_level = notice"]
        for setting in [*settings, *(["log_analyze = on"] if analyze else [])]:
            cursor.execute(f"SET auto_explain.{setting}")
        cursor.execute("SET client_min_messages = notice")
        cursor.execute(f"SET ROLE {app_role}")
        for name, value in context.items():
            cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
        for _ in range(calls):
            del connection.notices[:]
            cursor.execute(statement, parameters)
            cursor.fetchall()
        notices = list(connection.notices)
    finally:
        connection.rollback()
        connection.close()
    return [json.loads(notice[notice.index("{") :]) for notice in notices if "plan:" in notice]


def seed_members(admin_engine: Engine, team_id: uuid.UUID, count: int, *, ended: int = 0) -> None:
    """`count` more members of the team, joined a second apart, the first `ended` of them with a membership
    that has ended; inserted set-based (thousands in a statement) and analysed."""
    tag = uuid.uuid4().hex[:8]
    with admin_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, name, password_hash) "
                "SELECT md5(:tag || s)::uuid, :tag || s || '@seats.example', 'Seat ' || s, 'x' "
                "FROM generate_series(1, :n) AS s"
            ),
            {"tag": tag, "n": count},
        )
        conn.execute(
            text(
                "INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at, ends_at) "
                "SELECT md5('m' || :tag || s)::uuid, :team, md5(:tag || s)::uuid, 'member', "
                "now() - make_interval(secs => :n - s), CASE WHEN s <= :ended THEN now() - interval '1 hour' END "
                "FROM generate_series(1, :n) AS s"
            ),
            {"tag": tag, "n": count, "team": team_id, "ended": ended},
        )
        conn.execute(text("ANALYZE users, tenant_members"))
