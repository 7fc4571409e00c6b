"""The main tenant queries reach their rows through an index that starts with tenant_id, under RLS.

Each query is planned (EXPLAIN) as the app role inside a transaction that carries a tenant context,
the way every request's transaction does, over a few hundred teams' worth of rows and fresh
statistics, so the planner chooses as it would in production. Nothing forces its hand
(no `enable_seqscan = off`): a policy that hid the index (a cast of tenant_id, a function around it)
or a missing index would show up as a sequential scan here.

Each query is planned twice: as the application writes it (an explicit `tenant_id = ...`, which the
ORM adds) and with row-level security alone deciding which rows are visible.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

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


def _team_id(n: int) -> uuid.UUID:
    """The id the seed gives team `n`: lpad(to_hex(n), 32, '0')::uuid."""
    return uuid.UUID(hex=f"{n:032x}")


def _member_user_id(n: int) -> uuid.UUID:
    """A member of team `n` (md5('user-<n>-1')::uuid), so the own-memberships policy sees a real user."""
    return uuid.UUID(hashlib.md5(f"user-{n}-1".encode(), usedforsecurity=False).hexdigest())


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
    """A page query of one tenant-owned table; `{tenant}` is where the explicit tenant filter goes."""

    name: str
    table: str
    sql: str

    def statement(self, *, explicit_filter: bool) -> str:
        condition = f"{self.table}.tenant_id = CAST(:tenant_id AS uuid)" if explicit_filter else "true"
        return self.sql.format(tenant=condition)


# Written as the ORM writes them: nyxcore.services.members.list_members, notes.list_notes,
# invitations.list_pending, audit.list_events, github_tokens._stored.
QUERIES = [
    TenantQuery(
        "members page",
        "tenant_members",
        """SELECT tenant_members.id, tenant_members.user_id, tenant_members.role, tenant_members.joined_at,
                  users.name, users.email
           FROM tenant_members JOIN users ON users.id = tenant_members.user_id
           WHERE {tenant}
           ORDER BY tenant_members.joined_at, tenant_members.id LIMIT 50 OFFSET 0""",
    ),
    TenantQuery(
        "notes list",
        "notes",
        """SELECT notes.id, notes.title, notes.body, notes.updated_at, users_1.name
           FROM notes LEFT OUTER JOIN users AS users_1 ON users_1.id = notes.author_id
           WHERE {tenant}
           ORDER BY notes.updated_at DESC, notes.id DESC LIMIT 50 OFFSET 0""",
    ),
    TenantQuery(
        "invitations list",
        "invitations",
        """SELECT invitations.id, invitations.email, invitations.role, invitations.created_at,
                  invitations.expires_at
           FROM invitations
           WHERE {tenant} AND invitations.consumed_at IS NULL AND invitations.revoked_at IS NULL
           ORDER BY invitations.created_at DESC, invitations.id DESC LIMIT 50 OFFSET 0""",
    ),
    TenantQuery(
        "audit events page",
        "audit_events",
        """SELECT audit_events.id, audit_events.action, audit_events.target, audit_events.at, users_1.name
           FROM audit_events LEFT OUTER JOIN users AS users_1 ON users_1.id = audit_events.actor_id
           WHERE {tenant}
           ORDER BY audit_events.at DESC, audit_events.id DESC LIMIT 50 OFFSET 0""",
    ),
    TenantQuery(
        "github token",
        "github_tokens",
        """SELECT github_tokens.id, github_tokens.key_id, github_tokens.nonce, github_tokens.ciphertext,
                  github_tokens.last_four, github_tokens.github_login, github_tokens.set_at
           FROM github_tokens
           WHERE {tenant}""",
    ),
]


@pytest.fixture
def app_engine(database: Any) -> Iterator[Engine]:
    """A plain engine as the app role: RLS applies, the app's own scoping does not."""
    engine = create_engine(database.app_url)
    yield engine
    engine.dispose()


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


def _plan(engine: Engine, sql: str) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of `sql` as the app role, with TEAM as the tenant context."""
    with engine.begin() as conn:
        conn.execute(
            text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
            {"t": str(_team_id(TEAM)), "u": str(_member_user_id(TEAM))},
        )
        document = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), {"tenant_id": str(_team_id(TEAM))})
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
    admin_engine: Engine, app_engine: Engine, query: TenantQuery, explicit_filter: bool
) -> None:
    _seed(admin_engine, query.table)
    with admin_engine.connect() as conn:
        tenant_indexes = _tenant_first_indexes(conn, query.table)
    assert tenant_indexes, f"{query.table} has no index that starts with tenant_id"

    plan = _plan(app_engine, query.statement(explicit_filter=explicit_filter))
    shown = _describe(plan)
    nodes = list(_nodes(plan))

    # The policy is in the plan (RLS is enforced for the app role), comparing uuid to uuid. Next to an
    # explicit `tenant_id = <uuid>` the planner may turn it into a one-time `<uuid> = <setting>` check.
    assert POLICY_SETTING in json.dumps(plan), f"no tenant policy in the plan:\n{shown}"
    assert not TENANT_ID_AS_TEXT.search(json.dumps(plan)), (
        f"tenant_id is cast, so no index can serve it:\n{shown}"
    )

    seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == query.table]
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
