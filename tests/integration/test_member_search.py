"""Member search by the term's words (migration 0023): the same matches, in the same order, and never another team's.

`nyxcore_member_matches` gives the planner each word of a term (three or more letters or digits) as a
condition of its own, so it may look up the rarest word in the trigram indexes. A word is in every value
the whole term matches, so the function must return exactly what `lower(name) LIKE term OR email LIKE term`
returns among the context team's live members, in join order, forwards and backwards, after a key; and
nothing of another team, even where its members carry the very same names and addresses' words.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore import create_app
from nyxcore.extensions import db
from nyxcore.pagination import like_pattern
from tests import conftest
from tests.helpers import rows, scalar
from tests.integration.test_account_migration import _migrate, fresh_database  # noqa: F401  (a fixture)

MATCHES = "SELECT m FROM nyxcore_member_matches(:p, :at, :key, :back, :n) AS m"
TERMS = [
    "rare name 17",  # three words, two of them in every name of the team
    "name 1",  # a word of the team and a short one (not a condition)
    "ame 17",  # words that start inside a word of the name
    "17 rare",  # words in an order no name has
    "rare name 017",  # no match
    "%_ name",  # LIKE's wildcards, escaped, beside a word
    "team-x",  # an address's word across its punctuation
    "name",  # one word: the term itself
]


def _seed(admin_engine: Engine, team_id: uuid.UUID, domain: str, count: int) -> None:
    """`count` members named "Rare Name <i>" (i from 0), a few of them with "%_ " in the name, and one whose
    membership ended; all teams' members are seeded the same way, so another team holds the same names."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    people = [
        {
            "u": uuid.uuid4(),
            "m": uuid.uuid4(),
            "n": f"Rare {'%_ ' if i % 7 == 0 else ''}Name {i}",
            "e": f"r{i}-{uuid.uuid4().hex[:6]}@{domain}",
            "j": base + timedelta(seconds=i // 2),  # joined in twos: the id breaks the tie
            "end": base if i == 5 else None,
        }
        for i in range(count)
    ]
    with admin_engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, name, password_hash) VALUES (:u, :e, :n, 'x')"), people)
        conn.execute(
            text(
                "INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at, ends_at) "
                "VALUES (:m, :t, :u, 'member', :j, :end)"
            ),
            [{**person, "t": team_id} for person in people],
        )
        conn.execute(text("ANALYZE users"))


@pytest.fixture
def two_teams(make_user: Any, admin_engine: Engine) -> tuple[Any, Any]:
    mine, theirs = make_user(name="Mine Owner"), make_user(name="Their Owner")
    _seed(admin_engine, mine.team_id, "team-x.example", 120)
    _seed(admin_engine, theirs.team_id, "team-x.example", 60)  # the same names and domain
    return mine, theirs


def _expected(admin_engine: Engine, team_id: uuid.UUID, pattern: str, *, backwards: bool) -> list[uuid.UUID]:
    """The reference: every live member of the team whose name or address is LIKE the term, in join order."""
    order = "DESC" if backwards else "ASC"
    found = rows(
        admin_engine,
        "SELECT m.id FROM tenant_members m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = :t "
        "AND (lower(u.name) LIKE :p ESCAPE '\\' OR u.email LIKE :p ESCAPE '\\') "
        f"AND (m.ends_at IS NULL OR m.ends_at > now()) ORDER BY m.joined_at {order}, m.id {order}",
        t=team_id,
        p=pattern,
    )
    return [row.id for row in found]


def _matches(conn: Any, pattern: str, *, backwards: bool, n: int = 1000, at: Any = None, key: Any = None) -> list[uuid.UUID]:
    params = {"p": pattern, "at": at, "key": key, "back": backwards, "n": n}
    return [row[0] for row in conn.execute(text(MATCHES), params)]


@pytest.mark.parametrize("term", TERMS)
def test_a_search_by_words_finds_exactly_the_terms_matches_in_join_order(app_engine, admin_engine, two_teams, term):
    mine, _ = two_teams
    pattern = like_pattern(term)
    joined = {row.id: row.joined_at for row in rows(admin_engine, "SELECT id, joined_at FROM tenant_members WHERE tenant_id = :t", t=mine.team_id)}
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(mine.team_id)})
        for backwards in (False, True):
            expected = _expected(admin_engine, mine.team_id, pattern, backwards=backwards)
            assert _matches(conn, pattern, backwards=backwards) == expected
            assert _matches(conn, pattern, backwards=backwards, n=3) == expected[:3]
            if len(expected) > 4:  # after (before) a key: the rest, in order
                key = expected[3]
                assert _matches(conn, pattern, backwards=backwards, at=joined[key], key=key) == expected[4:]
    assert term != "rare name 17" or len(_expected(admin_engine, mine.team_id, pattern, backwards=False)) == 1


@pytest.mark.parametrize("term", ["rare name 17", "name 4", "team-x", "%_ name"])
def test_another_teams_members_never_match_a_search_by_words(app_engine, admin_engine, two_teams, term):
    """The other team has members of the very same names and address words: none is ever returned, and with
    no context there is nothing at all."""
    mine, theirs = two_teams
    pattern = like_pattern(term)
    mine_ids = {row.id for row in rows(admin_engine, "SELECT id FROM tenant_members WHERE tenant_id = :t", t=mine.team_id)}
    theirs_ids = {row.id for row in rows(admin_engine, "SELECT id FROM tenant_members WHERE tenant_id = :t", t=theirs.team_id)}
    assert _expected(admin_engine, theirs.team_id, pattern, backwards=False)  # they would match
    with app_engine.begin() as conn:
        assert _matches(conn, pattern, backwards=False) == []  # no context
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(mine.team_id)})
        for backwards in (False, True):
            found = set(_matches(conn, pattern, backwards=backwards))
            assert found and found <= mine_ids and not found & theirs_ids


def test_the_team_page_shows_a_full_names_one_match_and_no_other_teams(two_teams, login_as):
    mine, _ = two_teams
    response = login_as(mine).get(f"/team/?q={quote('Rare Name 17')}")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body.count('<td data-label="Name">') == 1 and "Rare Name 17<" in body and "Members (1)" in body


def test_migration_0023_upgrades_and_downgrades(fresh_database):  # noqa: F811
    _migrate(fresh_database, "head")
    admin = create_engine(fresh_database.admin_url)
    by_words = "SELECT count(*) FROM pg_proc WHERE proname = 'nyxcore_member_matches' AND prosrc LIKE '%regexp_matches%'"
    definer = "SELECT count(*) FROM pg_proc WHERE proname = 'nyxcore_member_matches' AND prosecdef"
    granted = (
        "SELECT count(*) FROM pg_proc WHERE proname = 'nyxcore_member_matches' "
        "AND has_function_privilege(:role, oid, 'EXECUTE')"
    )
    try:
        assert scalar(admin, by_words) == 1 and scalar(admin, definer) == 1
        assert scalar(admin, granted, role=fresh_database.app_role) == 1
        app = create_app(conftest.test_config(fresh_database))
        with app.app_context():
            from flask_migrate import downgrade

            downgrade(revision="0022")
            db.engine.dispose()
        assert scalar(admin, by_words) == 0 and scalar(admin, definer) == 1  # 0017's function again
        assert scalar(admin, granted, role=fresh_database.app_role) == 1
        _migrate(fresh_database, "head")
        assert scalar(admin, by_words) == 1
    finally:
        admin.dispose()
