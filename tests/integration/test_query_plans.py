"""The main tenant queries reach their rows through an index that starts with tenant_id, under RLS.

Each query is planned (EXPLAIN) as the app role inside a transaction that carries a tenant context,
the way every request's transaction does, over a few hundred teams' worth of rows and fresh
statistics, so the planner chooses as it would in production. Nothing forces its hand
(no `enable_seqscan = off`): a policy that hid the index (a cast of tenant_id, a function around it)
or a missing index would show up as a sequential scan here.

The statements are the app's own: each page is requested through the app, as the team's owner, and
the statements it sends are captured (a `before_cursor_execute` listener), so nothing here is SQL
copied "as the ORM writes it" that could drift from what it really writes. Each page's query is
planned twice: as the app sent it (with the explicit `tenant_id = ...` the ORM adds) and with that
filter taken out, so that row-level security alone decides which rows are visible.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from nyxcore.extensions import db
from nyxcore.roles import TenantRole
from tests.helpers import explained_plans

TEAMS = 400
MEMBERS_PER_TEAM = 30
NOTES_PER_TEAM = 25
INVITATIONS_PER_TEAM = 12
EVENTS_PER_TEAM = 60
TEAM = 7  # the team whose queries are planned; every team has the same shape
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
# The policies' tenant setting as EXPLAIN prints it: read as a uuid, so tenant_id is compared uuid to uuid.
POLICY_SETTING = "(NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid"
POLICY_TENANT = f"tenant_id = {POLICY_SETTING}"
TENANT_ID_AS_TEXT = re.compile(r"\(?\btenant_id\)?::text")
CONTEXT_PREFIX = re.compile(r"^\s*(SET LOCAL app\.[^;]*;\s*)+")


def _team_id(n: int) -> uuid.UUID:
    """The id the seed gives team `n`: lpad(to_hex(n), 32, '0')::uuid."""
    return uuid.UUID(hex=f"{n:032x}")


# Deterministic ids: md5(...)::uuid, so rows can refer to each other without lookups.
SEED = {
    "tenants": [
        """INSERT INTO tenants (id, name, slug)
           SELECT lpad(to_hex(t), 32, '0')::uuid, 'Team ' || t, 'team-' || t
           FROM generate_series(0, :teams - 1) AS t""",
    ],
    "tenant_members": [
        """INSERT INTO users (id, email, name, password_hash)
           SELECT md5('user-' || t || '-' || m)::uuid, 'u' || t || '-' || m || '@example.com', 'User ' || m, 'x'
           FROM generate_series(0, :teams - 1) AS t, generate_series(0, :members - 1) AS m""",
        """INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at)
           SELECT md5('member-' || t || '-' || m)::uuid, lpad(to_hex(t), 32, '0')::uuid,
                  md5('user-' || t || '-' || m)::uuid, CASE WHEN m = 0 THEN 'owner' ELSE 'member' END,
                  now() - make_interval(days => :members - m, secs => t)
           FROM generate_series(0, :teams - 1) AS t, generate_series(0, :members - 1) AS m""",
    ],
    "notes": [
        """INSERT INTO notes (id, tenant_id, title, body, created_at, updated_at)
           SELECT md5('note-' || t || '-' || n)::uuid, lpad(to_hex(t), 32, '0')::uuid, 'Note ' || n,
                  repeat('Meeting notes and plans. ', 20), now() - make_interval(days => n),
                  now() - make_interval(hours => n, secs => t)
           FROM generate_series(0, :teams - 1) AS t, generate_series(0, :notes - 1) AS n""",
    ],
    "invitations": [
        """INSERT INTO invitations (id, tenant_id, token_hash, email, role, created_at, expires_at,
                                    consumed_at, revoked_at)
           SELECT md5('invitation-' || t || '-' || i)::uuid, lpad(to_hex(t), 32, '0')::uuid,
                  md5('token-' || t || '-' || i) || md5('hash-' || t || '-' || i),
                  'guest' || i || '@example.com', 'member', now() - make_interval(hours => i),
                  now() + interval '7 days',
                  CASE WHEN i % 3 = 1 THEN now() END, CASE WHEN i % 3 = 2 THEN now() END
           FROM generate_series(0, :teams - 1) AS t, generate_series(0, :invitations - 1) AS i""",
    ],
    "audit_events": [
        """INSERT INTO audit_events (id, tenant_id, action, target, details, at)
           SELECT md5('event-' || t || '-' || e)::uuid, lpad(to_hex(t), 32, '0')::uuid, 'member.role_changed',
                  'u' || e || '@example.com', '{"old": "member", "new": "admin"}',
                  now() - make_interval(mins => e, secs => t)
           FROM generate_series(0, :teams - 1) AS t, generate_series(0, :events - 1) AS e""",
    ],
    "github_tokens": [
        """INSERT INTO github_tokens (id, tenant_id, key_id, nonce, ciphertext, last_four, github_login)
           SELECT md5('token-' || t)::uuid, lpad(to_hex(t), 32, '0')::uuid, 'k1',
                  decode(substr(md5('nonce-' || t), 1, 24), 'hex'), decode(md5('secret-' || t) || md5('more-' || t), 'hex'),
                  'abcd', 'octocat-' || t
           FROM generate_series(0, :teams - 1) AS t""",
    ],
}


@dataclass(frozen=True)
class TenantQuery:
    """The query a page sends for one tenant-owned table, told apart from the page's other statements
    by `marker` (a fragment of it, such as its ORDER BY)."""

    name: str
    table: str
    page: str
    marker: str


QUERIES = [
    # The member list's rows and its seat count come from functions (migrations 0018, 0021): planned
    # there, below (test_page_function_reads_by_a_tenant_id_index).
    # NyxBook's list and the open invitations are read inside functions (migration 0021): planned there,
    # below (test_page_function_reads_by_a_tenant_id_index). This page's invitations are the closed list.
    TenantQuery("invitations list", "invitations", "/team/invitations", "ORDER BY invitations.created_at"),
    TenantQuery("audit events page", "audit_events", "/team/audit", "ORDER BY audit_events.at"),
    TenantQuery("github token", "github_tokens", "/github/", "FROM github_tokens"),
]


def _seed(admin_engine: Engine, table: str) -> None:
    """Every team gets the same rows of `table` (and the users they need), then fresh statistics."""
    counts = {
        "teams": TEAMS,
        "members": MEMBERS_PER_TEAM,
        "notes": NOTES_PER_TEAM,
        "invitations": INVITATIONS_PER_TEAM,
        "events": EVENTS_PER_TEAM,
    }
    with admin_engine.begin() as conn:
        for statement in [*SEED["tenants"], *SEED[table]]:
            conn.execute(text(statement), counts)
        conn.execute(text(f"ANALYZE tenants, users, {table}"))


def _tenant_first_indexes(conn: Connection, table: str) -> set[str]:
    """Names of `table`'s indexes whose first column is tenant_id (from pg_indexes)."""
    rows = conn.execute(
        text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = :t"),
        {"t": table},
    )
    names = set()
    for name, definition in rows:
        columns = re.search(r"USING \w+ \((.*?)\)", definition)
        if columns and columns.group(1).split(",")[0].strip() == "tenant_id":
            names.add(name)
    return names


@dataclass(frozen=True)
class Captured:
    statement: str
    parameters: Any


def _page_statements(app: Flask, client: Any, query: TenantQuery) -> list[Captured]:
    """The statements of `query.table` that requesting `query.page` sends, matching `query.marker`."""
    sent: list[Captured] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        # The first statement of a transaction carries the tenant context in front; _plan sets its own.
        sent.append(Captured(CONTEXT_PREFIX.sub("", statement), parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(query.page)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    found = [
        c for c in sent if query.marker in c.statement and c.statement.lstrip().upper().startswith("SELECT")
    ]
    shown = "\n\n".join(c.statement for c in sent)
    assert found, f"GET {query.page} sent no statement with {query.marker!r}; it sent:\n{shown}"
    return found


def _without_explicit_filter(statement: str, table: str) -> str:
    """`statement` with the ORM's `<table>.tenant_id = <parameter>` replaced by `true`."""
    filtered, found = re.subn(rf"\b{table}\.tenant_id = %\(\w+\)s(::UUID)?", "true", statement)
    assert found, f"no explicit tenant filter on {table} in:\n{statement}"
    return filtered


def _plan(engine: Engine, statement: str, parameters: Any, *, user_id: uuid.UUID) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of the statement as the app role, with TEAM as the tenant context."""
    with engine.begin() as conn:
        conn.execute(
            text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
            {"t": str(_team_id(TEAM)), "u": str(user_id)},
        )
        document = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        plan: dict[str, Any] = document.scalar_one()[0]["Plan"]  # psycopg2 decodes the json
        return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _describe(plan: dict[str, Any], depth: int = 0) -> str:
    """The plan as indented lines, for failure messages."""
    keys = ("Relation Name", "Index Name", "Index Cond", "Recheck Cond", "Filter", "One-Time Filter")
    details = ", ".join(f"{key}: {plan[key]}" for key in keys if key in plan)
    lines = ["  " * depth + f"{plan['Node Type']} ({details})"]
    lines += [_describe(child, depth + 1) for child in plan.get("Plans", [])]
    return "\n".join(lines)


@pytest.mark.parametrize("explicit_filter", [True, False], ids=["as-the-app-writes-it", "rls-alone"])
@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_tenant_query_uses_a_tenant_id_index(
    admin_engine: Engine,
    app_engine: Engine,
    app: Flask,
    make_user: Any,
    add_member: Any,
    login_as: Any,
    query: TenantQuery,
    explicit_filter: bool,
) -> None:
    _seed(admin_engine, query.table)
    with admin_engine.connect() as conn:
        tenant_indexes = _tenant_first_indexes(conn, query.table)
    assert tenant_indexes, f"{query.table} has no index that starts with tenant_id"
    owner = make_user(name="Plan Owner")
    add_member(_team_id(TEAM), owner, TenantRole.OWNER)
    client = login_as(owner, _team_id(TEAM))

    for captured in _page_statements(app, client, query):
        statement = captured.statement
        if not explicit_filter:
            statement = _without_explicit_filter(statement, query.table)
        plan = _plan(app_engine, statement, captured.parameters, user_id=owner.user_id)
        shown = f"{statement}\n\n{_describe(plan)}"
        nodes = list(_nodes(plan))
        # The policy is in the plan (RLS is enforced for the app role), comparing uuid to uuid. Next to an
        # explicit `tenant_id = <uuid>` the planner may turn it into a one-time `<uuid> = <setting>` check.
        assert POLICY_SETTING in json.dumps(plan), f"no tenant policy in the plan:\n{shown}"
        assert not TENANT_ID_AS_TEXT.search(json.dumps(plan)), (
            f"tenant_id is cast, so no index can serve it:\n{shown}"
        )

        seq_scans = [
            n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == query.table
        ]
        assert not seq_scans, f"sequential scan of {query.table}:\n{shown}"
        tenant_scans = [
            n
            for n in nodes
            if n["Node Type"] in INDEX_SCANS
            and n.get("Index Name") in tenant_indexes
            and "tenant_id = " in n.get("Index Cond", "")
        ]
        assert tenant_scans, f"no scan of a tenant_id index ({', '.join(sorted(tenant_indexes))}):\n{shown}"
        if not explicit_filter:
            # Only the policy names the tenant, so the index is searched with the policy's own expression.
            assert any(POLICY_TENANT in n["Index Cond"] for n in tenant_scans), shown


# The page functions (migrations 0018 and 0021), each with the page whose statement calls it and its table.
FUNCTIONS = [
    # nyxcore_member_page's statement and nyxcore_seat_counts's, both called by the member list's statement
    TenantQuery("members page", "tenant_members", "/team/", "FROM nyxcore_member_page("),
    TenantQuery("notes list", "notes", "/notes/", "FROM nyxcore_note_lines("),
    TenantQuery(
        "pending invitations", "invitations", "/team/invitations", "FROM nyxcore_pending_invitations("
    ),
]


@pytest.mark.parametrize("query", FUNCTIONS, ids=[q.name for q in FUNCTIONS])
def test_page_function_reads_by_a_tenant_id_index(
    admin_engine: Engine,
    app: Flask,
    database: Any,
    make_user: Any,
    add_member: Any,
    login_as: Any,
    query: TenantQuery,
) -> None:
    """The statement inside each page function (planned once per connection, generic plan) reads its
    table by a tenant_id index, with the tenant policy in the plan."""
    _seed(admin_engine, query.table)
    with admin_engine.connect() as conn:
        tenant_indexes = _tenant_first_indexes(conn, query.table)
    owner = make_user(name="Plan Owner")
    add_member(_team_id(TEAM), owner, TenantRole.OWNER)
    client = login_as(owner, _team_id(TEAM))
    (call,) = _page_statements(app, client, query)
    # The plans the function keeps: its own statements' (not the call's), on the third call of a connection.
    documents = explained_plans(
        admin_engine, database.app_role, call.statement, call.parameters,
        context={"app.tenant_id": str(_team_id(TEAM)), "app.user_id": str(owner.user_id)}, calls=3,
    )  # fmt: skip
    plans = [document["Plan"] for document in documents if "nyxcore_" not in document.get("Query Text", "")]
    assert plans, f"no nested statement was explained for {call.statement}"
    for plan in plans:
        shown = _describe(plan)
        assert POLICY_SETTING in json.dumps(plan), f"no tenant policy in the plan:\n{shown}"
        nodes = list(_nodes(plan))
        assert not [
            n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == query.table
        ], shown
        assert [
            n
            for n in nodes
            if n["Node Type"] in INDEX_SCANS
            and n.get("Index Name") in tenant_indexes
            and "tenant_id = " in n.get("Index Cond", "")
        ], f"no scan of a tenant_id index ({', '.join(sorted(tenant_indexes))}):\n{shown}"
