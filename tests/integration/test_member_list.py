"""The member list by key, its capped count, and member search (issue 15, "Flat with size").

A team of 130 seeded members (joined in threes at the same instant, so the order's tie-break on
`id` is exercised) is walked through the team page's own links: forwards from the first page,
backwards from the last, and from the middle; every member shows once, in (joined_at, id) order.
Search is walked the same way for a term the trigram indexes serve and for 1- and 2-character terms
(matched in windows of members, page by page). Another team's look-alike members never show.
The SQL functions search relies on and the `users` policy (migration 0017) are checked as the app role.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from alembic.script import ScriptDirectory
from flask_migrate import downgrade
from sqlalchemy import create_engine, text

from nyxcore import create_app
from nyxcore.extensions import db
from nyxcore.services import member_list
from tests import conftest
from tests.helpers import rows, scalar
from tests.integration.test_account_migration import _migrate, fresh_database  # noqa: F401  (a fixture)

SEEDED = 130
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
NAME = re.compile(r"<td[^>]*>((?:Member \d{3})|(?:Look Alike \d{3}))")
LINK = {rel: re.compile(rf'href="([^"]+)"{attr}') for rel, attr in (("next", ' rel="next"'), ("prev", ' rel="prev"'))}
LAST = re.compile(r'href="([^"]+)">Last<')


def _seed(admin_engine, team_id: uuid.UUID, prefix: str, count: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    users = [
        {"id": uuid.uuid4(), "n": f"{prefix} {i:03d}", "e": f"m{i:03d}-{uuid.uuid4().hex[:6]}@example.com", "i": i}
        for i in range(count)
    ]
    with admin_engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, name, password_hash) VALUES (:id, :e, :n, 'x')"), users)
        conn.execute(
            text("INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at) VALUES (:m, :t, :u, 'member', :j)"),
            [{"m": uuid.uuid4(), "t": team_id, "u": u["id"], "j": base + timedelta(seconds=u["i"] // 3)} for u in users],
        )


@pytest.fixture
def crowd(make_user, admin_engine, login_as):
    """An owner's client in a team of 130 seeded members (plus the owner), and a team of look-alikes."""
    owner, stranger = make_user(name="Olive Owner"), make_user(name="Stranger")
    _seed(admin_engine, owner.team_id, "Member", SEEDED)
    _seed(admin_engine, stranger.team_id, "Look Alike", 40)
    order = rows(
        admin_engine,
        "SELECT u.name, u.email FROM tenant_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.tenant_id = :t AND u.name LIKE 'Member %' ORDER BY m.joined_at, m.id",
        t=owner.team_id,
    )
    return login_as(owner), [(row.name, row.email) for row in order], owner.team_id


def _page(client, url: str) -> tuple[str, list[str]]:
    response = client.get(url)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    return body, NAME.findall(body)


def _walk(client, url: str, rel: str) -> list[str]:
    """The names on every page from `url` on, following the `rel` links, in the order shown."""
    seen: list[str] = []
    for _ in range(200):
        body, names = _page(client, url)
        seen = seen + names if rel == "next" else names + seen
        link = LINK[rel].search(body)
        if link is None:
            return seen
        url = html.unescape(link.group(1))
    raise AssertionError("the links never ended")


def test_pages_by_key_show_every_member_once_in_join_order(crowd):
    client, order, _ = crowd
    names = [name for name, _ in order]
    body, first = _page(client, "/team/")
    assert first == names[:50]
    assert 'rel="prev"' not in body and "Page 1 of" not in body
    assert _walk(client, "/team/", "next") == names
    last_url = html.unescape(LAST.search(body).group(1))
    assert "last=1" in last_url
    body, last = _page(client, last_url)
    assert last == names[-49:]  # the last 50 rows of the list: 49 seeded members, then the owner
    assert 'rel="next"' not in body
    assert _walk(client, last_url, "prev") == names


def test_a_page_from_the_middle_and_back(crowd):
    client, order, _ = crowd
    names = [name for name, _ in order]
    body, _ = _page(client, "/team/")
    second_url = html.unescape(LINK["next"].search(body).group(1))
    body, second = _page(client, second_url)
    assert second == names[50:100]  # members 48-50 joined at one instant: the id orders them
    back_url = html.unescape(LINK["prev"].search(body).group(1))
    assert _page(client, back_url)[1] == names[:50]
    assert ">Look Alike" not in body


@pytest.mark.parametrize("term", ["member", "9"])
def test_a_search_walks_past_memberships_that_ended_but_are_not_yet_removed(crowd, admin_engine, monkeypatch, term):
    client, order, team_id = crowd
    monkeypatch.setattr(member_list, "SHORT_SCAN", 40)
    with admin_engine.begin() as conn:  # every third member's end date passed; the beat has not run yet
        conn.execute(
            text(
                "UPDATE tenant_members SET ends_at = now() - interval '1 minute' WHERE tenant_id = :t AND id IN "
                "(SELECT m.id FROM tenant_members m JOIN users u ON u.id = m.user_id "
                " WHERE m.tenant_id = :t AND u.name LIKE 'Member %' AND right(u.name, 1) IN ('0', '3', '6', '9'))"
            ),
            {"t": team_id},
        )
    expected = [name for name, email in order if name[-1] not in "0369" and (term in name.lower() or term in email)]
    assert expected and _walk(client, f"/team/?q={term}", "next") == expected


def test_the_count_is_capped_except_against_a_seat_limit(crowd, admin_engine, monkeypatch):
    client, _, team_id = crowd
    body, _ = _page(client, "/team/")
    assert "Members (131)" in body and "131 members" in body
    monkeypatch.setattr(member_list, "COUNT_CAP", 100)
    body, _ = _page(client, "/team/")
    assert "Members (100+)" in body and "100+ members" in body
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET seat_limit = 500 WHERE id = :t"), {"t": team_id})
    body, _ = _page(client, "/team/")
    assert "Members (131)" in body and "Seats: 131 of 500 used" in body  # counted up to the limit


@pytest.mark.parametrize(
    ("term", "contains"),
    [("member 07", "member 07"), ("M07", "m07"), ("9", "9"), ("07", "07"), ("%_", "%_")],
)
def test_search_finds_every_match_page_by_page(crowd, monkeypatch, term, contains):
    client, order, _ = crowd
    monkeypatch.setattr(member_list, "SHORT_SCAN", 40)  # several windows for the short terms
    expected = [name for name, email in order if contains in name.lower() or contains in email]
    url = f"/team/?q={quote(term)}"
    assert _walk(client, url, "next") == expected
    body, _ = _page(client, url)
    if len(term) >= 3 and term != "%_":
        assert f"Members ({len(expected)})" in body
        assert "one or two characters" not in body
    else:  # not counted: a short term is matched 40 members at a time
        assert "Members (" not in body and "40 members at a time" in body
        assert 'aria-describedby="search-window"' in body


SEARCHES = (
    "SELECT nyxcore_member_matches(:p, NULL, NULL, :back, 1000)",
    "SELECT nyxcore_member_window(:p, NULL, NULL, :back, 1000, 1000)",
)


def test_the_search_functions_answer_for_the_context_team_only(app_engine, admin_engine, crowd):
    _, _, team_id = crowd
    mine = rows(admin_engine, "SELECT id, user_id FROM tenant_members WHERE tenant_id = :t", t=team_id)
    with app_engine.begin() as conn:
        for search in SEARCHES:  # no context: nothing
            assert conn.execute(text(search), {"p": "%", "back": False}).all() == []
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(team_id)})
        for search in SEARCHES:
            for back in (False, True):
                assert conn.execute(text(search), {"p": "%look alike%", "back": back}).all() == []
                found = [row[0] for row in conn.execute(text(search), {"p": "%", "back": back})]
                assert sorted(found) == sorted(row.id for row in mine)  # each member of this team once
        # The users policy as rewritten: the team's members and nobody else.
        visible = {row[0] for row in conn.execute(text("SELECT id FROM users"))}
        assert visible == {row.user_id for row in mine}


def test_migration_0017_upgrades_and_downgrades(fresh_database):  # noqa: F811
    _migrate(fresh_database, "head")
    admin = create_engine(fresh_database.admin_url)
    try:
        indexes = "SELECT count(*) FROM pg_indexes WHERE indexname IN ('ix_users_name_trgm', 'ix_users_email_trgm')"
        assert scalar(admin, indexes) == 2
        policy = "SELECT qual FROM pg_policies WHERE tablename = 'users' AND policyname = 'team_members'"
        assert "EXISTS" in scalar(admin, policy)
        app = create_app(conftest.test_config(fresh_database))
        with app.app_context():
            downgrade(revision=ScriptDirectory(str(MIGRATIONS)).get_revision("0017").down_revision)
            db.engine.dispose()
        assert scalar(admin, indexes) == 0
        assert scalar(admin, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'") == 0
        assert scalar(admin, "SELECT count(*) FROM pg_proc WHERE proname IN ('nyxcore_member_matches', 'nyxcore_member_window')") == 0
        assert "EXISTS" not in scalar(admin, policy)
        _migrate(fresh_database, "head")
        assert scalar(admin, indexes) == 2
    finally:
        admin.dispose()


PAGE = "SELECT * FROM nyxcore_member_page(:team, NULL, NULL, false, 1000, CAST(:ids AS uuid[]))"


def test_the_page_function_answers_for_the_named_context_team_only(app_engine, admin_engine, crowd, make_user):
    """nyxcore_member_page (migration 0018) reads `users` past its policies, so it must never widen them:
    no context, or a team other than the context's, gives no row; an inviter outside the team stays unnamed."""
    _, _, team_id = crowd
    outsider = make_user(name="Outside Inviter")
    mine = rows(
        admin_engine,
        "SELECT m.id, m.user_id, u.name FROM tenant_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.tenant_id = :t ORDER BY m.joined_at, m.id",
        t=team_id,
    )
    inside, outside = mine[1].id, mine[2].id
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenant_members SET invited_by = :u WHERE id = :m"), {"u": mine[0].user_id, "m": inside})
        conn.execute(text("UPDATE tenant_members SET invited_by = :u WHERE id = :m"), {"u": outsider.user_id, "m": outside})
    with app_engine.begin() as conn:
        assert conn.execute(text(PAGE), {"team": team_id, "ids": None}).all() == []  # no context
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(outsider.team_id)})
        assert conn.execute(text(PAGE), {"team": team_id, "ids": None}).all() == []  # another team's context
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(team_id)})
        assert conn.execute(text(PAGE), {"team": outsider.team_id, "ids": None}).all() == []  # names another team
        page = conn.execute(text(PAGE), {"team": team_id, "ids": None}).all()
        assert [row.id for row in page] == [row.id for row in mine]  # the whole team, in join order
        inviters = {row.id: row.inviter_name for row in page}
        assert inviters[inside] == mine[0].name and inviters[outside] is None  # as the users policy shows them
        chosen = conn.execute(text(PAGE), {"team": team_id, "ids": [str(outside), str(uuid.uuid4())]}).all()
        assert [row.id for row in chosen] == [outside]



def test_the_page_function_never_returns_another_teams_member_whose_id_it_is_given(app_engine, admin_engine, crowd, make_user):
    """The ids a search hands nyxcore_member_page are the caller's: another team's member ids, given in the
    context of the caller's team (or the context set to that team but the call naming this one), give no row."""
    _, _, team_id = crowd
    other = make_user(name="Other Team Owner")
    theirs = [str(row.id) for row in rows(admin_engine, "SELECT id FROM tenant_members WHERE tenant_id = :t", t=other.team_id)]
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(team_id)})
        conn.execute(text("SELECT set_config('app.user_id', :u, true)"), {"u": str(other.user_id)})
        assert conn.execute(text(PAGE), {"team": team_id, "ids": theirs}).all() == []
        for direction in ("false", "true"):  # both directions' statements
            backwards = PAGE.replace("false", direction)
            assert conn.execute(text(backwards), {"team": team_id, "ids": theirs}).all() == []
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(other.team_id)})
        assert conn.execute(text(PAGE), {"team": team_id, "ids": theirs}).all() == []

def test_migration_0018_upgrades_and_downgrades(fresh_database):  # noqa: F811
    _migrate(fresh_database, "head")
    admin = create_engine(fresh_database.admin_url)
    functions = "SELECT count(*) FROM pg_proc WHERE proname = 'nyxcore_member_page' AND prosecdef"
    try:
        assert scalar(admin, functions) == 1
        app = create_app(conftest.test_config(fresh_database))
        with app.app_context():
            downgrade(revision="0017")
            db.engine.dispose()
        assert scalar(admin, functions) == 0
        _migrate(fresh_database, "head")
        assert scalar(admin, functions) == 1
    finally:
        admin.dispose()


def test_a_search_counts_its_matches_up_to_the_match_cap(crowd, monkeypatch):
    """A search's count stops at MATCH_CAP, and is exact up to it: the first and last pages count what their own
    search read (up to MATCH_CAP + 1 matches), a page after a key counts with a second search."""
    client, order, _ = crowd
    assert "Members (100+)" in _page(client, "/team/?q=member")[0]  # 130 matches
    assert "Members (100+)" in _page(client, "/team/?q=member&last=1")[0]
    assert "Members (100)" in _page(client, f"/team/?q={quote('member 0')}")[0]  # Member 000 to 099: exactly the cap
    assert "Members (100)" in _page(client, f"/team/?q={quote('member 0')}&last=1")[0]
    body, names = _page(client, f"/team/?q={quote('member 1')}")  # Member 100 to 129: one page, every match
    assert "Members (30)" in body and len(names) == 30
    monkeypatch.setattr(member_list, "MATCH_CAP", 200)
    assert "Members (130)" in _page(client, "/team/?q=member")[0]
    one = order[7][0]
    body, names = _page(client, f"/team/?q={quote(one.lower())}")
    assert names == [one] and "Members (1)" in body  # counted from the page (no second search)
