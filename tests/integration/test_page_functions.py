"""NyxBook's list and the pending invitations read through functions (migration 0021): never another team's row.

They leave the ORM's scoping, so each filters by the team its caller names and runs under the app
role's policies (SECURITY INVOKER): no context, a context of another team, or a call naming another
team than the context's, gives no row; the context's own team gives exactly its rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

NOTES = "SELECT id, title, author_name, total FROM nyxcore_note_lines(:team, 50, 0)"
PENDING = "SELECT id, email, inviter_name, total FROM nyxcore_pending_invitations(:team, 50, 0)"
# The rows each should return, read by the superuser past every policy.
EXPECTED = {
    NOTES: "SELECT id FROM notes WHERE tenant_id = :team",
    PENDING: "SELECT id FROM invitations WHERE tenant_id = :team AND consumed_at IS NULL AND revoked_at IS NULL",
}


@pytest.fixture
def two_teams(admin_engine: Engine, make_user: Any) -> tuple[Any, Any]:
    """Two owners in teams of their own, each team with two notes and two open invitations (and one closed)."""
    mine, theirs = make_user(name="Mine Owner"), make_user(name="Their Owner")
    with admin_engine.begin() as conn:
        for account in (mine, theirs):
            for n in range(2):
                conn.execute(
                    text(
                        "INSERT INTO notes (id, tenant_id, author_id, title, body) VALUES (:i, :t, :a, :title, 'x')"
                    ),
                    {
                        "i": uuid.uuid4(),
                        "t": account.team_id,
                        "a": account.user_id,
                        "title": f"{account.name} {n}",
                    },
                )
            for n, closed in ((0, False), (1, False), (2, True)):
                conn.execute(
                    text(
                        "INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, expires_at,"
                        " revoked_at) VALUES (:i, :t, :h, :e, 'member', :u, now() + interval '1 day',"
                        " CASE WHEN :closed THEN now() END)"
                    ),
                    {
                        "i": uuid.uuid4(),
                        "t": account.team_id,
                        "h": uuid.uuid4().hex + uuid.uuid4().hex,
                        "e": f"guest{n}-{account.team_id.hex[:6]}@example.com",
                        "u": account.user_id,
                        "closed": closed,
                    },
                )
    return mine, theirs


@pytest.mark.parametrize("statement", [NOTES, PENDING], ids=["notes", "pending invitations"])
def test_a_page_function_answers_for_the_context_team_it_is_named(
    app_engine: Engine, admin_engine: Engine, two_teams: tuple[Any, Any], statement: str
) -> None:
    mine, theirs = two_teams
    with admin_engine.connect() as conn:
        expected = set(conn.execute(text(EXPECTED[statement]), {"team": mine.team_id}).scalars())
    with app_engine.begin() as conn:
        assert conn.execute(text(statement), {"team": mine.team_id}).all() == []  # no context
        conn.execute(
            text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
            {"t": str(mine.team_id), "u": str(mine.user_id)},
        )
        assert conn.execute(text(statement), {"team": theirs.team_id}).all() == []  # names another team
        rows = conn.execute(text(statement), {"team": mine.team_id}).all()
        assert {row.id for row in rows} == expected and len(expected) == 2
        assert {row.total for row in rows} == {2}  # counted in the team alone (the open ones)
        assert {row[2] for row in rows} == {mine.name}  # the author / inviter, shown by the users policies
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(theirs.team_id)})
        assert (
            conn.execute(text(statement), {"team": mine.team_id}).all() == []
        )  # the context is another team's


def test_a_page_function_hides_an_author_or_inviter_the_users_policies_hide(
    app_engine: Engine, admin_engine: Engine, two_teams: tuple[Any, Any]
) -> None:
    """A note's author and an invitation's inviter outside the team read NULL, as the LEFT JOIN under RLS gave."""
    mine, theirs = two_teams
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE notes SET author_id = :u WHERE tenant_id = :t"),
            {"u": theirs.user_id, "t": mine.team_id},
        )
        conn.execute(
            text("UPDATE invitations SET invited_by = :u WHERE tenant_id = :t"),
            {"u": theirs.user_id, "t": mine.team_id},
        )
    with app_engine.begin() as conn:
        conn.execute(
            text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
            {"t": str(mine.team_id), "u": str(mine.user_id)},
        )
        for statement in (NOTES, PENDING):
            rows = conn.execute(text(statement), {"team": mine.team_id}).all()
            assert len(rows) == 2 and {row[2] for row in rows} == {None}


def test_the_page_functions_keep_row_level_security_on(admin_engine: Engine) -> None:
    """SECURITY INVOKER: their statements run as the app role, under its policies; the plan is settled once."""
    with admin_engine.connect() as conn:
        functions = conn.execute(
            text(
                "SELECT proname, prosecdef, proconfig FROM pg_proc "
                "WHERE proname IN ('nyxcore_note_lines', 'nyxcore_pending_invitations', 'nyxcore_seat_counts',"
                " 'nyxcore_member_page')"
            )
        ).all()
    assert {f.proname: f.prosecdef for f in functions} == {
        "nyxcore_note_lines": False,
        "nyxcore_pending_invitations": False,
        "nyxcore_seat_counts": False,
        "nyxcore_member_page": True,  # 0018's documented exception, with its explicit team filter
    }
    forced = {f.proname for f in functions if "plan_cache_mode=force_generic_plan" in f.proconfig}
    # The member page is left to PostgreSQL's choice: forced generic, a 50,000-member team's middle page sorted
    # every member (migration 0021).
    assert forced == {"nyxcore_note_lines", "nyxcore_pending_invitations", "nyxcore_seat_counts"}


def test_sqlite_development_mode_lists_the_teams_own_pending_invitations_and_searches_its_members(tmp_path: Any) -> None:
    """Without the functions (SQLite, `make run`), the ORM's tenant filter keeps each team's invitations apart."""
    from flask_migrate import upgrade

    from nyxcore import create_app
    from nyxcore.config import load_config
    from tests.conftest import Client

    config = load_config({"NYXCORE_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db"})
    app = create_app(config)
    with app.app_context():
        upgrade()
    app.test_client_class = Client
    clients = {name: app.test_client() for name in ("alice", "bob")}
    for name, client in clients.items():
        client.post_form(
            "/auth/signup",
            {"name": name, "email": f"{name}@example.com", "password": "correct horse battery"},
        )
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/dev.db")
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET email_verified_at = CURRENT_TIMESTAMP"))
            for user_id, team_id, name in conn.execute(
                text(
                    "SELECT u.id, m.tenant_id, u.name FROM users u JOIN tenant_members m ON m.user_id = u.id"
                )
            ).all():
                conn.execute(
                    text(
                        "INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, created_at,"
                        " expires_at) VALUES (:i, :t, :h, :e, 'member', :u, CURRENT_TIMESTAMP,"
                        " datetime('now', '+1 day'))"
                    ),
                    {
                        "i": uuid.uuid4().hex,
                        "t": team_id,
                        "h": uuid.uuid4().hex * 2,
                        "e": f"guest-of-{name}@example.com",
                        "u": user_id,
                    },
                )
    finally:
        engine.dispose()
    for name, client in clients.items():
        assert client.login(f"{name}@example.com", "correct horse battery").status_code == 302
        body = client.get("/team/").get_data(as_text=True)
        other = "bob" if name == "alice" else "alice"
        assert "Pending invitations (1)" in body and f"guest-of-{name}@example.com" in body
        assert f'{name} <span class="badge">you</span>' in body  # the ids are read as text here too
        created = client.post_form("/notes/new", {"title": f"Plan of {name}", "body": "x"})
        assert created.status_code == 302
        listing = client.get("/notes/").get_data(as_text=True)
        assert f'<a href="{created.location}">Plan of {name}</a>' in listing and f"Plan of {other}" not in listing
        assert f"guest-of-{other}@example.com" not in body
        # Search has no functions to call here either: a term of any length finds the team's own members only
        # (before, every search on SQLite was an error page).
        for term, found in ((name, True), (name[:2], True), (name[0], True), (other, False), ("zz", False)):
            response = client.get("/team/", query_string={"q": term})
            assert response.status_code == 200, term
            page = response.get_data(as_text=True)
            assert ("No member matches" not in page) is found, term
            assert f"{other}@example.com" not in page


SEATS = "SELECT members, open_invitations FROM nyxcore_seat_counts(:team, 1001)"


def test_the_seat_counts_count_the_named_context_team_alone(
    app_engine: Engine, admin_engine: Engine, two_teams: tuple[Any, Any]
) -> None:
    """Live members and unexpired open invitations of the context's team; nothing of another team's."""
    mine, theirs = two_teams
    with admin_engine.begin() as conn:  # an expired invitation holds no seat
        conn.execute(
            text("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE email LIKE 'guest0-%'")
        )
    with app_engine.begin() as conn:
        assert conn.execute(text(SEATS), {"team": mine.team_id}).one() == (0, 0)  # no context
        conn.execute(
            text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
            {"t": str(mine.team_id), "u": str(mine.user_id)},
        )
        assert conn.execute(text(SEATS), {"team": mine.team_id}).one() == (1, 1)
        assert conn.execute(text(SEATS), {"team": theirs.team_id}).one() == (0, 0)  # names another team
