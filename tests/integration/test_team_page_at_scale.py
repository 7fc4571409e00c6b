"""The team page's functions read a large team by its index, whatever plan is kept (migration 0024).

- `nyxcore_seat_counts(team, cap)` counts live members up to `cap`. With the user in the context as well as
  the team (as in every request), the `tenant_members` policies are `tenant_isolation OR own_memberships`,
  and its forced generic plan read them through a BitmapOr: every index entry of the team before the first
  row, whatever the cap.
- `nyxcore_member_page` and `nyxcore_member_window` read a page after (before) a key; in a generic plan the
  key was a filter (a `coalesce` of a parameter is not used ahead of the policies), checked on every member
  from the team's first.

A team of 1,500 members (another team beside it, and 300 small teams) is read as the app role in the context a
request sets; the plans are the ones the functions keep (auto_explain, nested statements), the generic one
forced where PostgreSQL may choose. Each function still answers for the context's team only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask_migrate import downgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore import create_app
from nyxcore.extensions import db
from tests import conftest
from tests.helpers import explained_plans, rows, scalar, seed_members
from tests.integration.test_account_migration import _migrate, fresh_database  # noqa: F401  (a fixture)

MEMBERS = 1500
# Other teams of 20 members: one team is a small share of all memberships, as in production (with one team
# of one member each, the generic plan estimated a team at a few rows and walked the index anyway).
OTHER_TEAMS, SMALL_TEAM = 300, 20
CAP = 1001  # COUNT_CAP + 1, as the member list asks
SEATS = "SELECT members, open_invitations FROM nyxcore_seat_counts(:team, :cap)"


def _seed_small_teams(admin_engine: Engine, count: int) -> None:
    """`count` teams of SMALL_TEAM members each, all of them the same SMALL_TEAM users."""
    tag = uuid.uuid4().hex[:8]
    with admin_engine.begin() as conn:
        for statement in (
            "INSERT INTO users (id, email, name, password_hash) SELECT md5('u' || :tag || s)::uuid, "
            "'one' || :tag || s || '@seats.example', 'One ' || s, 'x' FROM generate_series(1, :n) AS s",
            "INSERT INTO tenants (id, name, slug) SELECT md5('t' || :tag || s)::uuid, 'Small ' || s, "
            "'small-' || :tag || '-' || s FROM generate_series(1, :n) AS s",
            "INSERT INTO tenant_members (id, tenant_id, user_id, role) SELECT md5('m' || :tag || s || '-' || u)::uuid, "
            "md5('t' || :tag || s)::uuid, md5('u' || :tag || u)::uuid, 'member' "
            "FROM generate_series(1, :n) AS s, generate_series(1, :size) AS u",
        ):
            conn.execute(text(statement), {"tag": tag, "n": count, "size": SMALL_TEAM})


@pytest.fixture
def large_team(admin_engine: Engine, make_user: Any) -> Iterator[tuple[Any, Any]]:
    """An owner's team of 1 + 1,500 live members (and 5 ended), another owner's team of 1 + 20, and 300
    teams of 20 members."""
    mine, theirs = make_user(name="Large Owner"), make_user(name="Other Owner")
    _seed_small_teams(admin_engine, OTHER_TEAMS)
    seed_members(admin_engine, mine.team_id, MEMBERS + 5, ended=5)
    seed_members(admin_engine, theirs.team_id, 20)
    yield mine, theirs


def _in_context(conn: Any, account: Any) -> None:
    conn.execute(
        text("SELECT set_config('app.tenant_id', :t, true), set_config('app.user_id', :u, true)"),
        {"t": str(account.team_id), "u": str(account.user_id)},
    )


def test_a_large_teams_seat_count_is_capped_exact_below_the_cap_and_its_own(
    app_engine: Engine, large_team: tuple[Any, Any]
) -> None:
    mine, theirs = large_team
    with app_engine.begin() as conn:
        assert conn.execute(text(SEATS), {"team": mine.team_id, "cap": CAP}).one() == (0, 0)  # no context
        _in_context(conn, mine)
        for _ in range(3):  # the plan the connection keeps, too
            assert conn.execute(text(SEATS), {"team": mine.team_id, "cap": CAP}).one() == (CAP, 0)
        # A seat limit above the team's size: every live member, exactly (the ended five are not counted).
        assert conn.execute(text(SEATS), {"team": mine.team_id, "cap": 5000}).one() == (MEMBERS + 1, 0)
        # Naming another team than the context's: nothing, even though that team has members.
        assert conn.execute(text(SEATS), {"team": theirs.team_id, "cap": CAP}).one() == (0, 0)
    with app_engine.begin() as conn:
        _in_context(conn, theirs)  # the other team in its own context: its 21 members, none of mine
        assert conn.execute(text(SEATS), {"team": theirs.team_id, "cap": CAP}).one() == (21, 0)
        assert conn.execute(text(SEATS), {"team": mine.team_id, "cap": CAP}).one() == (0, 0)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_large_teams_seat_count_reads_no_more_members_than_its_cap(
    admin_engine: Engine, database: Any, large_team: tuple[Any, Any]
) -> None:
    """The kept plan walks a tenant_id index and stops at the cap: no bitmap of the whole team."""
    mine, _ = large_team
    documents = explained_plans(
        admin_engine, database.app_role, "SELECT * FROM nyxcore_seat_counts(%(team)s, %(cap)s)",
        {"team": mine.team_id, "cap": CAP},
        context={"app.tenant_id": str(mine.team_id), "app.user_id": str(mine.user_id)}, calls=3, analyze=True,
    )  # fmt: skip
    inner = [d["Plan"] for d in documents if "tenant_members" in d.get("Query Text", "")]
    assert inner, "the function's statement was not explained"
    nodes = [node for plan in inner for node in _nodes(plan)]
    shown = "\n".join(
        f"{n['Node Type']} {n.get('Relation Name', '')} {n.get('Index Name', '')} rows={n.get('Actual Rows')}"
        for n in nodes
    )
    assert not [n for n in nodes if n["Node Type"].startswith("Bitmap")], shown
    scans = [n for n in nodes if n.get("Relation Name") == "tenant_members"]
    assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans), shown
    # Either index that leads with tenant_id walks the team in order and stops at the cap; which one the
    # planner takes depends on the statistics of the moment (both were seen: the (tenant_id, joined_at, id)
    # index and the (tenant_id, user_id) unique one).
    leading_team = ("ix_tenant_members_tenant_id", "uq_tenant_members_tenant_id")
    assert all(n["Index Name"].startswith(leading_team) for n in scans), shown
    assert all(n["Actual Rows"] <= CAP for n in scans), shown


def _member_keys(admin_engine: Engine, team_id: uuid.UUID) -> list[Any]:
    """The team's live members in join order: (joined_at, id)."""
    return rows(
        admin_engine,
        "SELECT joined_at, id FROM tenant_members WHERE tenant_id = :t AND (ends_at IS NULL OR ends_at > now()) "
        "ORDER BY joined_at, id",
        t=team_id,
    )


PAGE = "SELECT id FROM nyxcore_member_page(%(team)s, %(at)s, %(key)s, %(back)s, 51, NULL)"
WINDOW = "SELECT * FROM nyxcore_member_window(%(pattern)s, %(at)s, %(key)s, %(back)s, 500, 51)"


@pytest.mark.parametrize("backwards", [False, True], ids=["after", "before"])
@pytest.mark.parametrize("statement", [PAGE, WINDOW], ids=["member page", "member window"])
def test_a_page_after_a_key_is_read_from_the_key_in_the_generic_plan(
    admin_engine: Engine, database: Any, large_team: tuple[Any, Any], statement: str, backwards: bool
) -> None:
    """The key is an index condition: a middle page reads its page (the window: its `scan` members), not every
    member from the team's first (or last) one."""
    mine, _ = large_team
    keys = _member_keys(admin_engine, mine.team_id)
    middle = keys[len(keys) // 2]
    parameters = {"team": mine.team_id, "at": middle.joined_at, "key": middle.id, "back": backwards, "pattern": "%zq%"}
    context = {"app.tenant_id": str(mine.team_id), "app.user_id": str(mine.user_id)}
    documents = explained_plans(
        admin_engine, database.app_role, statement, parameters,
        context={**context, "plan_cache_mode": "force_generic_plan"}, calls=2, analyze=True,
    )  # fmt: skip
    inner = [d["Plan"] for d in documents if "public.tenant_members AS m" in d.get("Query Text", "")]
    assert inner, "the function's statement was not explained"
    scans = [n for plan in inner for n in _nodes(plan) if n.get("Relation Name") == "tenant_members" and n.get("Alias") == "m"]
    shown = "\n".join(f"{n['Node Type']} {n.get('Index Cond')} rows={n.get('Actual Rows')} removed={n.get('Rows Removed by Filter')}" for n in scans)
    assert scans and all("ROW(joined_at, id)" in n.get("Index Cond", "") for n in scans), shown
    assert all(n["Actual Rows"] <= 500 and n.get("Rows Removed by Filter", 0) == 0 for n in scans), shown


def test_the_generic_plans_read_the_right_page_and_only_the_context_team(
    app_engine: Engine, admin_engine: Engine, large_team: tuple[Any, Any]
) -> None:
    """After (before) a key: the next 51 members in join order, under the generic plan as under custom ones; a
    call naming the other team, or in its context, never returns a member of mine."""
    mine, theirs = large_team
    keys = _member_keys(admin_engine, mine.team_id)
    mine_ids = {key.id for key in keys}
    middle = len(keys) // 2
    page = "SELECT id FROM nyxcore_member_page(:team, :at, :key, :back, 51, NULL)"
    window = "SELECT * FROM nyxcore_member_window(:pattern, :at, :key, :back, 500, 51)"
    for mode in ("force_custom_plan", "force_generic_plan"):
        with app_engine.begin() as conn:
            _in_context(conn, mine)
            conn.execute(text("SELECT set_config('plan_cache_mode', :m, true)"), {"m": mode})
            for _ in range(2):  # the plan kept after a call, too
                for back, expected in ((False, keys[middle + 1 : middle + 52]), (True, keys[middle - 51 : middle][::-1])):
                    params = {"team": mine.team_id, "at": keys[middle].joined_at, "key": keys[middle].id, "back": back, "pattern": "%"}
                    want = [key.id for key in expected]
                    assert [r[0] for r in conn.execute(text(page), params)] == want, (mode, back)
                    assert [r[0] for r in conn.execute(text(window), params)] == want, (mode, back)
                    assert conn.execute(text(page), {**params, "team": theirs.team_id}).all() == []
        with app_engine.begin() as conn:
            _in_context(conn, theirs)
            conn.execute(text("SELECT set_config('plan_cache_mode', :m, true)"), {"m": mode})
            for back in (False, True):
                params = {"team": theirs.team_id, "at": keys[middle].joined_at, "key": keys[middle].id, "back": back, "pattern": "%"}
                for statement in (page, window):
                    found = {r[0] for r in conn.execute(text(statement), params)}
                    assert not found & mine_ids, (mode, back)
                assert conn.execute(text(page), {**params, "team": mine.team_id}).all() == []


def test_migration_0024_upgrades_and_downgrades(fresh_database):  # noqa: F811
    _migrate(fresh_database, "head")
    admin = create_engine(fresh_database.admin_url)
    settings = "SELECT proconfig FROM pg_proc WHERE proname = 'nyxcore_seat_counts'"
    paging = "FROM pg_proc WHERE proname IN ('nyxcore_member_page', 'nyxcore_member_window')"
    keyed = f"SELECT count(*) {paging} AND prosrc LIKE '%(key_at, key_id)%'"
    coalesced = f"SELECT count(*) {paging} AND prosrc LIKE '%(coalesce(after_at,%'"
    definers = f"SELECT count(*) {paging} AND prosecdef AND has_function_privilege(:role, oid, 'EXECUTE')"
    granted = (
        "SELECT has_function_privilege(:role, 'public.nyxcore_seat_counts(uuid, integer)', 'EXECUTE') "
        "AND NOT has_function_privilege('public', 'public.nyxcore_seat_counts(uuid, integer)', 'EXECUTE')"
    )
    try:
        assert set(scalar(admin, settings)) >= {"enable_bitmapscan=off", "plan_cache_mode=force_generic_plan"}
        assert scalar(admin, keyed) == 2
        assert scalar(admin, granted, role=fresh_database.app_role)
        app = create_app(conftest.test_config(fresh_database))
        with app.app_context():
            downgrade(revision="0023")
            db.engine.dispose()
        assert "enable_bitmapscan=off" not in scalar(admin, settings)  # 0021's function
        assert "plan_cache_mode=force_generic_plan" in scalar(admin, settings)
        assert scalar(admin, keyed) == 0 and scalar(admin, coalesced) == 2  # 0017's and 0018's statements
        assert scalar(admin, definers, role=fresh_database.app_role) == 2
        assert scalar(admin, granted, role=fresh_database.app_role)
        _migrate(fresh_database, "head")
        assert "enable_bitmapscan=off" in scalar(admin, settings)
        assert scalar(admin, keyed) == 2 and scalar(admin, coalesced) == 0 and scalar(admin, definers, role=fresh_database.app_role) == 2
    finally:
        admin.dispose()
