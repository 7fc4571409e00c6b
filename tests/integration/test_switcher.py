"""The team switcher of a user in many teams (issue 15): 20 teams in the switcher, all on /teams/.

The switcher shows the active team and the most recently joined ones, by name. Every signed-in page
reads the user, their session, their membership in the session's team and their 21 most recently
joined teams in one statement of one row (the teams as one JSON value): a user in 25 teams costs a
page the same statements, rows and objects as a user in one, and still reaches, switches to and
works in every team.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.services import sessions
from nyxcore.services.teams import SWITCHER_TEAMS
from tests.helpers import explained_plans, statements_for

TEAMS = 25
# The tenant context a transaction's first statement carries in front (EXPLAIN sets its own).
CONTEXT_PREFIX = re.compile(r"^\s*(BEGIN;\s*)?(SET LOCAL app\.[^;]*;\s*)+")


def _many_teams(admin_engine, user_id: uuid.UUID, teams: int = TEAMS) -> list[uuid.UUID]:
    """Put the user in `teams` more teams ('Crowd 000' ...), joined in that order before their personal
    team (made with the account, so joined last); their ids by name, which is also the order joined."""
    ids = [uuid.uuid4() for _ in range(teams)]
    with admin_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, slug) VALUES (:id, :name, :slug)"),
            [{"id": t, "name": f"Crowd {i:03}", "slug": f"crowd-{i:03}-{t.hex[:8]}"} for i, t in enumerate(ids)],
        )
        conn.execute(
            text(
                "INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at) "
                "VALUES (:id, :t, :u, 'member', now() - make_interval(days => :age))"
            ),
            [{"id": uuid.uuid4(), "t": t, "u": user_id, "age": teams - i} for i, t in enumerate(ids)],
        )
    return ids


def _switcher(page: str) -> list[tuple[str, bool]]:
    select = re.search(r'<select id="team-switch".*?</select>', page, re.S)
    assert select is not None
    return [(value, bool(chosen)) for value, chosen in re.findall(r'<option value="([^"]+)"( selected)?', select[0])]


def test_the_switcher_shows_20_teams_with_the_active_one_and_links_to_all(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    first_joined = ids[0]  # not among the 20 most recently joined
    client = login_as(crowd, first_joined)
    page = client.get("/notes/").get_data(as_text=True)
    options = _switcher(page)
    assert len(options) == SWITCHER_TEAMS
    assert [value for value, chosen in options if chosen] == [str(first_joined)]
    assert "All your teams" in page
    everything = client.get("/teams/").get_data(as_text=True)
    assert all(f"Crowd {i:03}" in everything for i in range(TEAMS))


def test_the_switcher_offers_the_most_recently_joined_teams_by_name(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    client = login_as(crowd, ids[0])
    latest = [crowd.team_id, *reversed(ids[-(SWITCHER_TEAMS - 2) :])]  # the personal team was joined last
    options = _switcher(client.get("/notes/").get_data(as_text=True))
    assert {value for value, _ in options} == {str(ids[0]), *map(str, latest)}
    names = re.findall(r'<option value="[^"]+"(?: selected)?>([^<]+)</option>', client.get("/notes/").get_data(as_text=True))
    assert names == sorted(names)


def test_a_team_beyond_the_switcher_can_be_switched_to(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    client = login_as(crowd, ids[-1])
    assert str(ids[1]) not in dict(_switcher(client.get("/notes/").get_data(as_text=True)))
    assert client.post_form("/teams/switch", {"tenant_id": str(ids[1])}).status_code == 302
    assert dict(_switcher(client.get("/notes/").get_data(as_text=True)))[str(ids[1])] is True


def test_without_a_chosen_team_the_earliest_joined_is_active(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    with admin_engine.begin() as conn:  # the personal team joined last: the crowd's first is the earliest
        conn.execute(text("UPDATE tenant_members SET joined_at = now() WHERE tenant_id = :t"), {"t": crowd.team_id})
    client = login_as(crowd)
    options = _switcher(client.get("/notes/").get_data(as_text=True))
    assert [value for value, chosen in options if chosen] == [str(ids[0])]


def test_an_earliest_joined_team_beyond_the_switchers_20_is_shown_active(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    with admin_engine.begin() as conn:  # the team last by name was joined first; the personal one last
        conn.execute(text("UPDATE tenant_members SET joined_at = now() WHERE tenant_id = :t"), {"t": crowd.team_id})
        conn.execute(
            text("UPDATE tenant_members SET joined_at = now() - interval '1 year' WHERE tenant_id = :t"), {"t": ids[-1]}
        )  # so it is not among the 20 most recently joined
    client = login_as(crowd)
    options = _switcher(client.get("/notes/").get_data(as_text=True))
    assert len(options) == SWITCHER_TEAMS
    assert [value for value, chosen in options if chosen] == [str(ids[-1])]


def test_many_teams_cost_a_page_no_statement_more_than_one(app, make_user, login_as, admin_engine):
    one, crowd = make_user(name="One Team"), make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    one_client, crowd_client = login_as(one), login_as(crowd, ids[-1])
    for client in (one_client, crowd_client):  # a session's first page may record its team for the next log in
        client.get("/notes/")
    assert statements_for(app, crowd_client, "/notes/") == statements_for(app, one_client, "/notes/")


def test_a_removal_from_a_team_counts_on_the_next_request(make_user, login_as, admin_engine):
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    client = login_as(crowd, ids[-1])
    assert dict(_switcher(client.get("/notes/").get_data(as_text=True)))[str(ids[-1])] is True
    with admin_engine.begin() as conn:
        conn.execute(text("DELETE FROM tenant_members WHERE tenant_id = :t"), {"t": ids[-1]})
    options = dict(_switcher(client.get("/notes/", follow_redirects=True).get_data(as_text=True)))
    assert str(ids[-1]) not in options and True in options.values()


def test_a_user_in_many_teams_is_read_as_one_row_of_three_objects(app, make_user, admin_engine):
    """The user, the active membership and its team (the session as two plain values): no ORM object
    per team of the switcher."""
    crowd = make_user(name="Crowd Member")
    ids = _many_teams(admin_engine, crowd.user_id)
    hour = timedelta(hours=1)
    loaded: list[str] = []

    def count(session: Session, instance: object) -> None:
        loaded.append(type(instance).__name__)

    with app.app_context(), tenancy.tenant_context(user_id=crowd.user_id):
        token = sessions.start(crowd.user_id, user_agent="pytest", ip_address="127.0.0.1", lifetime=hour)
        db.session.commit()
        db.session.expunge_all()
        event.listen(Session, "loaded_as_persistent", count)
        try:
            signed_in = sessions.load(crowd.user_id, token, idle=hour, wanted_tenant_id=ids[-1])
        finally:
            event.remove(Session, "loaded_as_persistent", count)
    assert signed_in is not None and signed_in.membership is not None
    assert signed_in.membership.tenant_id == ids[-1]
    assert [choice.tenant_id for choice in signed_in.choices] == [crowd.team_id, *reversed(ids[-SWITCHER_TEAMS:])]
    assert sorted(loaded) == ["Tenant", "TenantMember", "User"]


def test_the_switcher_works_on_sqlite_in_development_too(tmp_path):
    """The switcher's teams travel as JSON, which SQLite spells differently from PostgreSQL."""
    from flask_migrate import upgrade

    from nyxcore import create_app
    from nyxcore.config import load_config
    from tests.conftest import Client

    app = create_app(load_config({"NYXCORE_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db"}))
    with app.app_context():
        upgrade()
    app.test_client_class = Client
    client = app.test_client()
    client.post_form("/auth/signup", {"name": "Solo", "email": "solo@example.com", "password": "correct horse battery"})
    assert client.login("solo@example.com", "correct horse battery").status_code == 302
    assert client.post_form("/teams/new", {"name": "Zebra Crew"}).status_code == 302
    options = re.findall(r'<option value="[^"]+"( selected)?>([^<]+)</option>', client.get("/notes/").get_data(as_text=True))
    assert [(html.unescape(name), bool(chosen)) for chosen, name in options] == [
        ("Solo's team (Owner)", False),
        ("Zebra Crew (Owner)", True),
    ]


def _plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _plan_nodes(child))]


def test_a_page_of_a_user_in_500_teams_reads_the_switchers_21_not_all_500(app, make_user, login_as, admin_engine):
    """The analysed plans, as the app role, of the statement that loads the user (and of the statement
    inside `nyxcore_signed_in` that it calls): no scan of memberships or teams returns more rows than the
    switcher's 21 (by name, or through a policy that hashed every membership of the user, all 500 were
    read on every page)."""
    crowd = make_user(name="Crowd Member")
    _many_teams(admin_engine, crowd.user_id, teams=500)
    with admin_engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE tenants, tenant_members"))
    client = login_as(crowd)
    client.get("/notes/")  # the session's first page records its team
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "nyxcore_signed_in(" in statement:
            sent.append((CONTEXT_PREFIX.sub("", statement), parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/notes/").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    [(loading, parameters)] = sent
    # The analysed plans of the statement and of those inside `nyxcore_signed_in` (migration 0020).
    documents = explained_plans(
        admin_engine, app.config["NYXCORE_APP_ROLE"], loading, parameters,
        context={"app.user_id": str(crowd.user_id)}, analyze=True,
    )  # fmt: skip
    nodes = [node for document in documents for node in _plan_nodes(document["Plan"])]
    read = {(n["Node Type"], n["Relation Name"], n["Actual Rows"]) for n in nodes if n.get("Relation Name") in ("tenants", "tenant_members")}
    assert read and max(rows for _, _, rows in read) <= SWITCHER_TEAMS + 1, json.dumps(nodes, indent=1)


def test_the_switchers_teams_keep_their_order_through_the_aggregate():
    """PostgreSQL only "usually" keeps a sorted sub-select's order through json_agg: the order is the
    aggregate's own, so which 20 teams the switcher offers never depends on the plan."""
    from sqlalchemy.dialects import postgresql

    from nyxcore.services.teams import SWITCHER_CHOICES

    sql = " ".join(str(SWITCHER_CHOICES.compile(dialect=postgresql.dialect())).split())
    assert re.search(r"json_agg\(json_build_array\([^)]*\) ORDER BY \(\S+joined_at, \S+id\) DESC\)", sql), sql
