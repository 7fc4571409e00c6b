"""The database refuses what application code must never do, as the app role with no or partial context.

Raw SQL as the app role, with every table of the schema seeded (found from the catalog, so a new
table that is not seeded here fails the first test) and the catalog checked for anything that would
reopen these doors: a table without row-level security, a policy not on the list of reviewed
exceptions, a tenant table without its tenant_id guard, a readable password hash.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tests.helpers import count
from tests.tenant_rows import fill_tenant_tables

# Every policy that is not the standard tenant_isolation one, reviewed: (table, policy, command).
REVIEWED_EXCEPTIONS = {
    ("tenant_members", "own_memberships", "SELECT"),  # the team switcher
    ("tenants", "member_teams", "SELECT"),  # the team switcher
    ("tenants", "invited_team", "SELECT"),  # the invitation page names the team
    ("invitations", "invitation_by_token", "SELECT"),  # the magic link
    ("invitations", "consume_invitation_by_token", "UPDATE"),  # accepting; a trigger allows nothing else
    ("invitations", "reminder_scan", "SELECT"),  # owner only, inside nyxcore_invitations_due_reminder
    ("github_tokens", "key_rotation_scan", "SELECT"),  # owner only, inside its SECURITY DEFINER functions
    ("outbox_emails", "delivery", "ALL"),  # the worker, for the one message it delivers
    ("outbox_emails", "outbox_scan", "SELECT"),  # owner only, inside its SECURITY DEFINER functions
    ("users", "own_account", "ALL"),
    ("users", "team_members", "SELECT"),
    ("users", "inviter_by_token", "SELECT"),  # the invitation page names the inviter
    ("user_sessions", "own_sessions", "ALL"),
    ("user_two_factor", "own_two_factor", "ALL"),
    ("user_two_factor", "key_rotation_scan", "SELECT"),  # owner only, inside its SECURITY DEFINER function
    ("recovery_codes", "own_recovery_codes", "ALL"),
    ("account_tokens", "own_tokens", "ALL"),  # a user's own reset, verification and change links
    ("account_tokens", "token_by_hash", "SELECT"),  # a link's holder sees that one token
    ("account_tokens", "account_token_issue", "ALL"),  # owner only, inside nyxcore_issue_password_reset
    ("outbox_emails", "account_mail", "INSERT"),  # account mail (no team): insert only, never read
    ("join_requests", "own_join_requests", "SELECT"),  # a requester sees their own requests' state
    # owner only, inside nyxcore_joinable_teams (teams you can join: id and name, nothing else)
    ("team_domains", "domain_discovery", "SELECT"),
    ("tenants", "domain_discovery", "SELECT"),
    ("tenant_members", "domain_discovery", "SELECT"),
    ("tenant_members", "membership_end_scan", "SELECT"),  # owner only, inside its SECURITY DEFINER functions
    ("membership_notices", "own_notices", "SELECT"),  # why someone lost a team, read by them once
    ("membership_notices", "take_own_notices", "DELETE"),  # and used up; the team writes them
    ("join_links", "join_link_by_token", "SELECT"),  # a join link's holder finds its team (migration 0013)
}
# Tables whose owner is not held by RLS (FORCE), because SECURITY DEFINER functions read them as it.
NOT_FORCED = {"users"}


@dataclass
class World:
    team_a: uuid.UUID
    team_b: uuid.UUID
    user_a: uuid.UUID
    user_b: uuid.UUID
    token_hash_b: str
    outbox_b: uuid.UUID


def _seed(conn: Connection, name: str) -> tuple[uuid.UUID, uuid.UUID, str, uuid.UUID]:
    team, user = uuid.uuid4(), uuid.uuid4()
    token_hash = uuid.uuid4().hex * 2
    soon = datetime.now(UTC) + timedelta(days=1)
    conn.execute(
        text("INSERT INTO users (id, email, name, password_hash) VALUES (:u, :n || '@example.com', :n, 'secret-hash')"),
        {"u": user, "n": name},
    )
    conn.execute(text("INSERT INTO tenants (id, name, slug) VALUES (:t, :n, :n)"), {"t": team, "n": name})
    conn.execute(
        text("INSERT INTO tenant_members (id, tenant_id, user_id, role) VALUES (gen_random_uuid(), :t, :u, 'owner')"),
        {"t": team, "u": user},
    )
    made = fill_tenant_tables(conn, team, user)  # every other tenant table, found from the metadata
    outbox = made["outbox_emails"]
    conn.execute(  # unsent, with a body: what the sweep looks for
        text("UPDATE outbox_emails SET key_id = 'k1', nonce = '\\x00', body_ciphertext = '\\x00' WHERE id = :o"),
        {"o": outbox},
    )
    conn.execute(text("UPDATE invitations SET token_hash = :h, consumed_by = NULL WHERE tenant_id = :t"), {"h": token_hash, "t": team})
    conn.execute(
        text(
            "INSERT INTO user_sessions (id, user_id, token_hash, expires_at, user_agent, ip_address) "
            "VALUES (gen_random_uuid(), :u, :h, :x, 'test', '127.0.0.1')"
        ),
        {"u": user, "h": token_hash, "x": soon},
    )
    conn.execute(
        text(
            "INSERT INTO user_two_factor (id, user_id, key_id, nonce, ciphertext, enabled_at) "
            "VALUES (gen_random_uuid(), :u, 'k1', '\\x00', '\\x00', now())"
        ),
        {"u": user},
    )
    conn.execute(
        text("INSERT INTO recovery_codes (id, user_id, code_hash) VALUES (gen_random_uuid(), :u, :h)"),
        {"u": user, "h": token_hash},
    )
    conn.execute(
        text(
            "INSERT INTO account_tokens (id, user_id, purpose, token_hash, expires_at) "
            "VALUES (gen_random_uuid(), :u, 'reset_password', :h, :x)"
        ),
        {"u": user, "h": token_hash, "x": soon},
    )
    return team, user, token_hash, outbox


@pytest.fixture
def world(admin_engine: Engine) -> World:
    with admin_engine.begin() as conn:
        team_a, user_a, _, _ = _seed(conn, f"alpha{uuid.uuid4().hex[:6]}")
        team_b, user_b, token_b, outbox_b = _seed(conn, f"beta{uuid.uuid4().hex[:6]}")
    return World(team_a, team_b, user_a, user_b, token_b, outbox_b)



def _context(conn: Connection, **settings: object) -> None:
    for name in ("tenant_id", "user_id", "invite_token_hash", "outbox_id", "account_token_hash"):
        value = settings.get(name)
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": f"app.{name}", "v": str(value or "")})


def _tables(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars()
    )


def test_with_no_context_the_app_role_sees_and_changes_no_row_of_any_table(app_engine, admin_engine, world):
    with admin_engine.connect() as conn:
        tables = _tables(conn)
        empty = [table for table in tables if count(conn, f"SELECT count(*) FROM {table}") == 0]
    assert empty == [], f"seed these new tables in _seed: {empty}"
    with app_engine.begin() as conn:
        for table in tables:
            assert count(conn, f"SELECT count(*) FROM {table}") == 0, table
            assert conn.execute(text(f"UPDATE {table} SET id = id")).rowcount == 0, table
            assert conn.execute(text(f"DELETE FROM {table}")).rowcount == 0, table


def test_users_show_the_acting_user_and_team_mates_and_never_a_password_hash(app_engine, admin_engine, world):
    with app_engine.begin() as conn:
        _context(conn, user_id=world.user_a)
        assert conn.execute(text("SELECT id FROM users")).scalars().all() == [world.user_a]
        # Only the acting user's own row can change, and only by them.
        assert conn.execute(text("UPDATE users SET name = 'mallory'")).rowcount == 1
        _context(conn, user_id=world.user_a, tenant_id=world.team_b)  # as if A were in B's context
        assert set(conn.execute(text("SELECT id FROM users")).scalars()) == {world.user_a, world.user_b}
        assert conn.execute(text("UPDATE users SET name = 'mallory' WHERE id = :b"), {"b": world.user_b}).rowcount == 0
    with app_engine.connect() as conn, conn.begin():
        _context(conn, user_id=world.user_a)
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("SELECT password_hash FROM users WHERE id = :a"), {"a": world.user_a})
    with admin_engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users WHERE id = :b"), {"b": world.user_b}).scalar() != "mallory"


def test_a_user_may_delete_their_own_account_row_and_no_other(app_engine, admin_engine, world):
    # Deleting one's account (/account/delete) rests on own_account; nothing else lets a row go.
    with app_engine.begin() as conn:
        _context(conn, user_id=world.user_a, tenant_id=world.team_b)  # B is visible here, not deletable
        assert conn.execute(text("DELETE FROM users WHERE id = :b"), {"b": world.user_b}).rowcount == 0
        _context(conn, user_id=world.user_a)
        assert conn.execute(text("DELETE FROM users WHERE id <> :a"), {"a": world.user_a}).rowcount == 0
        assert conn.execute(text("DELETE FROM users WHERE id = :a"), {"a": world.user_a}).rowcount == 1
    with admin_engine.connect() as conn:
        assert count(conn, "SELECT count(*) FROM users WHERE id = :b", b=world.user_b) == 1
        # The foreign keys take the rest past RLS: A's memberships and sessions go, authorship is cleared.
        assert count(conn, "SELECT count(*) FROM tenant_members WHERE user_id = :a", a=world.user_a) == 0
        assert count(conn, "SELECT count(*) FROM user_sessions WHERE user_id = :a", a=world.user_a) == 0
        assert count(conn, "SELECT count(*) FROM audit_events WHERE tenant_id = :t", t=world.team_a) >= 1
        assert count(conn, "SELECT count(*) FROM audit_events WHERE actor_id = :a", a=world.user_a) == 0


def test_log_in_learns_the_salt_and_a_yes_or_no_never_the_hash(app_engine, admin_engine, world):
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET password_hash = '$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$ZGlnZXN0' WHERE id = :a"),
            {"a": world.user_a},
        )
        email = conn.execute(text("SELECT email FROM users WHERE id = :a"), {"a": world.user_a}).scalar_one()
    with app_engine.begin() as conn:
        setting = conn.execute(text("SELECT nyxcore_password_setting(:e)"), {"e": email.upper()}).scalar()
        assert setting == "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ"
        login = "SELECT nyxcore_login(:e, :c)"
        assert conn.execute(text(login), {"e": email, "c": setting + "$wrong"}).scalar() is None
        assert conn.execute(text(login), {"e": email, "c": setting + "$ZGlnZXN0"}).scalar() == world.user_a
        assert conn.execute(text("SELECT nyxcore_password_setting('nobody@example.com')")).scalar() is None


@pytest.mark.parametrize("table", ["user_two_factor", "recovery_codes"])
def test_two_factor_rows_are_their_users_own_even_in_a_shared_team(app_engine, world, table):
    with app_engine.begin() as conn:
        # A in B's team context (as if a team mate): B's secret and codes stay invisible and unchangeable.
        _context(conn, user_id=world.user_a, tenant_id=world.team_b)
        assert conn.execute(text(f"SELECT user_id FROM {table}")).scalars().all() == [world.user_a]
        assert conn.execute(text(f"UPDATE {table} SET user_id = user_id WHERE user_id = :b"), {"b": world.user_b}).rowcount == 0
        assert conn.execute(text(f"DELETE FROM {table} WHERE user_id = :b"), {"b": world.user_b}).rowcount == 0
    with app_engine.connect() as conn, conn.begin():
        _context(conn, user_id=world.user_a)
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(text(f"UPDATE {table} SET user_id = :b"), {"b": world.user_b})


def test_key_rotation_learns_which_users_hold_a_stale_secret_and_nothing_else(app_engine, world):
    with app_engine.begin() as conn:
        listed = conn.execute(text("SELECT * FROM nyxcore_users_with_stale_two_factor('k2')")).all()
        assert {row[0] for row in listed} == {world.user_a, world.user_b} and all(len(row) == 1 for row in listed)
        assert conn.execute(text("SELECT * FROM nyxcore_users_with_stale_two_factor('k1')")).all() == []
        assert count(conn, "SELECT count(*) FROM user_two_factor") == 0  # the scan left no door open


def test_outbox_mail_is_seen_by_its_team_and_by_the_worker_delivering_it(app_engine, world):
    with app_engine.begin() as conn:
        _context(conn, tenant_id=world.team_a)
        assert count(conn, "SELECT count(*) FROM outbox_emails") == 1
        assert count(conn, "SELECT count(*) FROM outbox_emails WHERE tenant_id = :b", b=world.team_b) == 0
        _context(conn, outbox_id=world.outbox_b)
        assert conn.execute(text("SELECT id FROM outbox_emails")).scalars().all() == [world.outbox_b]
        # The sweep learns ids across teams and nothing else.
        listed = conn.execute(text("SELECT * FROM nyxcore_unsent_outbox(now() + interval '1 hour', 12, 10)")).all()
        assert {row[0] for row in listed} >= {world.outbox_b} and all(len(row) == 1 for row in listed)


def test_the_outbox_claim_takes_only_the_message_the_context_names(app_engine, admin_engine, world):
    """nyxcore_claim_outbox (migration 0022) is SECURITY INVOKER: the outbox policies hold inside it."""
    claim = "SELECT * FROM nyxcore_claim_outbox(:o, now(), 12)"
    with app_engine.connect() as conn:
        for context in ({"tenant_id": world.team_a}, {"outbox_id": uuid.uuid4()}, {}):
            with conn.begin():
                _context(conn, **context)  # another team's, another message's, or none
                assert conn.execute(text(claim), {"o": world.outbox_b}).all() == []
        with conn.begin():
            _context(conn, outbox_id=world.outbox_b)
            (claimed,) = conn.execute(text(claim), {"o": world.outbox_b}).all()
            assert (claimed.attempts, claimed.key_id, bytes(claimed.body_ciphertext)) == (0, "k1", b"\x00")
            assert conn.execute(text(claim), {"o": world.outbox_b}).all() == []  # claimed: marked sent
            conn.rollback()
    unsent = "SELECT count(*) FROM outbox_emails WHERE id = :o AND sent_at IS NULL AND body_ciphertext IS NOT NULL"
    assert count(admin_engine, unsent, o=world.outbox_b) == 1  # refused claims changed nothing; the rollback undid one


@pytest.mark.parametrize(
    "change",
    [
        "role = 'owner'",
        "expires_at = now() + interval '10 years'",
        "email = 'mallory@example.com'",
        "revoked_at = NULL, consumed_at = now(), consumed_by = gen_random_uuid()",
    ],
)
def test_an_invitation_token_alone_lets_its_holder_accept_and_nothing_else(app_engine, world, change):
    with app_engine.connect() as conn, conn.begin():
        _context(conn, invite_token_hash=world.token_hash_b, user_id=world.user_a)
        with pytest.raises(DBAPIError, match="only lets its holder accept"):
            conn.execute(text(f"UPDATE invitations SET {change}"))


def test_an_invitation_token_holder_may_mark_it_accepted_by_themselves(app_engine, admin_engine, world):
    with app_engine.begin() as conn:
        _context(conn, invite_token_hash=world.token_hash_b, user_id=world.user_a)
        accepted = conn.execute(text("UPDATE invitations SET consumed_at = now(), consumed_by = :a"), {"a": world.user_a})
        assert accepted.rowcount == 1
    with app_engine.connect() as conn, conn.begin():
        _context(conn, invite_token_hash=world.token_hash_b, user_id=world.user_a)
        with pytest.raises(DBAPIError, match="only lets its holder accept"):  # once
            conn.execute(text("UPDATE invitations SET consumed_at = now(), consumed_by = :a"), {"a": world.user_a})


def test_account_tokens_show_their_own_user_and_the_one_presented_hash(app_engine, admin_engine, world):
    with app_engine.begin() as conn:
        _context(conn, user_id=world.user_a)
        assert conn.execute(text("SELECT user_id FROM account_tokens")).scalars().all() == [world.user_a]
        assert conn.execute(text("UPDATE account_tokens SET used_at = now() WHERE user_id = :b"), {"b": world.user_b}).rowcount == 0
        # A's holder of B's link sees that one token, and may not use it without acting as B.
        _context(conn, user_id=world.user_a, account_token_hash=world.token_hash_b)
        assert set(conn.execute(text("SELECT user_id FROM account_tokens")).scalars()) == {world.user_a, world.user_b}
        assert conn.execute(text("UPDATE account_tokens SET used_at = now() WHERE user_id = :b"), {"b": world.user_b}).rowcount == 0
        _context(conn, account_token_hash="0" * 64)
        assert count(conn, "SELECT count(*) FROM account_tokens") == 0
    with app_engine.connect() as conn, conn.begin():
        _context(conn, user_id=world.user_a)
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(
                text(
                    "INSERT INTO account_tokens (id, user_id, purpose, token_hash, expires_at) "
                    "VALUES (gen_random_uuid(), :b, 'reset_password', repeat('e', 64), now() + interval '1 hour')"
                ),
                {"b": world.user_b},
            )
    with admin_engine.connect() as conn:
        assert count(conn, "SELECT count(*) FROM account_tokens WHERE used_at IS NOT NULL") == 0


def test_the_reset_function_issues_a_few_tokens_an_hour_and_answers_an_id_or_nothing(app_engine, admin_engine, world):
    with admin_engine.connect() as conn:
        email = conn.execute(text("SELECT email FROM users WHERE id = :b"), {"b": world.user_b}).scalar_one()
    issue = "SELECT nyxcore_issue_password_reset(:e, :h, now() + interval '1 hour')"
    with app_engine.begin() as conn:  # anonymous: no context at all
        assert conn.execute(text(issue), {"e": "nobody@example.com", "h": "a" * 64}).scalar() is None
        # The seeded token is one of the three an hour this address may get.
        answers = [conn.execute(text(issue), {"e": email.upper(), "h": f"{n}" * 64}).scalar() for n in range(4)]
        assert answers == [world.user_b, world.user_b, None, None]
        assert count(conn, "SELECT count(*) FROM account_tokens") == 0  # and it sees none of them
    with admin_engine.connect() as conn:
        assert count(conn, "SELECT count(*) FROM account_tokens WHERE user_id = :b", b=world.user_b) == 3


def test_account_mail_may_be_added_by_anyone_and_read_by_nobody_but_its_worker(app_engine, world):
    outbox = uuid.uuid4()
    add = (
        "INSERT INTO outbox_emails (id, tenant_id, to_address, subject, attempts, created_at) "
        "VALUES (:o, :t, 'x@example.com', 'hello', 0, now())"
    )
    with app_engine.begin() as conn:
        conn.execute(text(add), {"o": outbox, "t": None})
        assert count(conn, "SELECT count(*) FROM outbox_emails") == 0
        _context(conn, user_id=world.user_a, tenant_id=world.team_a)
        assert count(conn, "SELECT count(*) FROM outbox_emails WHERE tenant_id IS NULL") == 0
        _context(conn, outbox_id=outbox)
        assert conn.execute(text("SELECT id FROM outbox_emails")).scalars().all() == [outbox]
    with app_engine.connect() as conn, conn.begin():
        _context(conn, tenant_id=world.team_a)
        with pytest.raises(DBAPIError, match="row-level security"):  # not into another team's mail
            conn.execute(text(add), {"o": uuid.uuid4(), "t": world.team_b})


def test_no_row_of_any_tenant_table_can_move_to_another_team(app_engine, admin_engine, world):
    with admin_engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT c.table_name FROM information_schema.columns c JOIN pg_tables t "
                "ON t.tablename = c.table_name AND t.schemaname = c.table_schema "
                "WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id'"
            )
        ).scalars().all()
    assert "outbox_emails" in tables and "notes" in tables
    for table in tables:
        with app_engine.connect() as conn, conn.begin():
            _context(conn, tenant_id=world.team_a, user_id=world.user_a)
            with pytest.raises(DBAPIError, match="cannot change"):
                conn.execute(text(f"UPDATE {table} SET tenant_id = :b"), {"b": world.team_b})


def test_the_catalog_has_no_table_policy_or_grant_that_reopens_these_doors(admin_engine, database):
    with admin_engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'"
            )
        ).all()
        policies = conn.execute(
            text("SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies WHERE schemaname = 'public'")
        ).all()
        with_tenant_id = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'tenant_id'")
            ).scalars()
        )
        guarded = set(
            conn.execute(
                text("SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'keep_tenant_id'")
            ).scalars()
        )
        hash_readable = conn.execute(
            text("SELECT has_column_privilege(:r, 'public.users', 'password_hash', 'SELECT')"), {"r": database.app_role}
        ).scalar_one()
    assert [t.relname for t in tables if not t.relrowsecurity] == []
    assert sorted(t.relname for t in tables if not t.relforcerowsecurity) == sorted(NOT_FORCED)
    assert with_tenant_id - guarded == set()
    assert hash_readable is False
    for policy in policies:
        if policy.policyname == "tenant_isolation":
            assert policy.tablename in with_tenant_id | {"tenants"}
            continue
        assert (policy.tablename, policy.policyname, policy.cmd) in REVIEWED_EXCEPTIONS, (
            f"policy {policy.policyname} on {policy.tablename} ({policy.cmd}) is not a reviewed exception"
        )
    for table in with_tenant_id:
        standard = [p for p in policies if p.tablename == table and p.policyname == "tenant_isolation"]
        assert len(standard) == 1, f"{table} has no tenant_isolation policy"
        assert "current_setting('app.tenant_id'::text, true)" in standard[0].qual
        assert standard[0].qual.startswith("(tenant_id =") and standard[0].with_check == standard[0].qual
