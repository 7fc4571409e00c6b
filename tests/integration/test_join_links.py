"""Join links and seat limits: making, listing and revoking links; joining through one; seats.

PostgreSQL with row-level security, the app connecting as the app role. The concurrency cases run
real concurrent transactions: threads, each with its own test client (and so its own connection).
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from nyxcore.roles import TenantRole
from tests.helpers import PAST_THE_END, count, dicts, refused_page, scalar, statements_for

A, M, V = TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER
LINK = re.compile(r"http://nyxcore\.test/join/([A-Za-z0-9_-]{43})")


def page(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def make_link(client: Any, **fields: Any) -> tuple[Any, str | None]:
    """Post the join-link form; the response and the raw token it shows (None if refused)."""
    data = {"role": "member", "days": "7", "max_uses": "5", "domains": "", **fields}
    response = client.post_form("/team/join-links", {k: str(v) for k, v in data.items()})
    found = LINK.search(page(response))
    return response, found.group(1) if found else None


def join_links(admin_engine: Engine) -> list[dict[str, Any]]:
    return dicts(admin_engine, "SELECT * FROM join_links ORDER BY created_at")


def members_of(admin_engine: Engine, team_id: uuid.UUID) -> int:
    return count(admin_engine, "SELECT count(*) FROM tenant_members WHERE tenant_id = :t", t=team_id)


def run_together(posts: list[tuple[Any, str]]) -> list[int]:
    """POST each (client, path) at once, one thread each (each client its own connection); the statuses."""
    start = threading.Barrier(len(posts))
    statuses: list[int] = []
    errors: list[BaseException] = []

    def post(client: Any, path: str) -> None:
        try:
            start.wait(timeout=10)
            statuses.append(client.post_form(path).status_code)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=post, args=pair) for pair in posts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return statuses


@pytest.fixture
def newcomers(make_user: Any, login_as: Any) -> Callable[[int], list[tuple[Any, Any]]]:
    """`n` verified accounts, each with a client of its own signed in."""

    def build(n: int) -> list[tuple[Any, Any]]:
        accounts = [make_user(name=f"Newcomer {i}") for i in range(n)]
        clients = [login_as(account) for account in accounts]
        for client in clients:
            client.csrf_token()  # the CSRF secret into each client's session before the threads start
        return list(zip(accounts, clients, strict=True))

    return build


# --- the admin's side ----------------------------------------------------------------------------


def test_an_admin_makes_a_link_sees_it_once_and_only_its_hash_is_kept(team, as_admin, admin_engine, caplog):
    response, token = make_link(as_admin, role="viewer", days="30", max_uses="3", domains="Example.COM, @example.org")
    assert response.status_code == 200
    assert token is not None
    assert response.headers["Cache-Control"] == "no-store"
    assert "shown only this once" in page(response)
    (stored,) = join_links(admin_engine)
    assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(stored)
    assert (stored["role"], stored["max_uses"], stored["uses"]) == ("viewer", 3, 0)
    assert stored["allowed_domains"] == "example.com example.org"
    assert timedelta(days=29, hours=23) < stored["expires_at"] - datetime.now(UTC) <= timedelta(days=30)
    listed = page(as_admin.get("/team/join-links"))
    assert token not in listed  # never again
    assert "3 of 3" in listed and "example.com, example.org" in listed and "Admin Person" in listed
    assert token not in caplog.text
    events = dicts(admin_engine, "SELECT action, details FROM audit_events WHERE action LIKE 'join_link.%'")
    assert [e["action"] for e in events] == ["join_link.created"]
    assert token not in str(events)


@pytest.mark.parametrize(
    ("fields", "field_message"),
    [
        ({"role": "admin"}, "never admins or owners"),
        ({"role": "owner"}, "never admins or owners"),
        ({"role": "superuser"}, "never admins or owners"),
        ({"days": "31"}, "1 to 30 days"),
        ({"days": "0"}, "1 to 30 days"),
        ({"days": "soon"}, "Not a valid integer value"),
        ({"max_uses": "0"}, "1 to 1000 times"),
        ({"max_uses": ""}, "how many people"),
        ({"domains": "not a domain!"}, "is not a domain name"),
    ],
)
def test_a_bad_link_is_refused_on_its_field_and_nothing_is_made(team, as_owner, admin_engine, fields, field_message):
    response, token = make_link(as_owner, **fields)
    assert response.status_code == 400
    assert token is None
    assert field_message in page(response)
    assert join_links(admin_engine) == []
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action LIKE 'join_link.%'") == 0


def test_a_revoked_link_lets_nobody_in_and_says_so(team, as_admin, login_as, make_user, admin_engine):
    _, token = make_link(as_admin)
    link_id = join_links(admin_engine)[0]["id"]
    assert as_admin.confirm(f"/team/join-links/{link_id}/revoke").status_code == 302
    assert "Revoked" in page(as_admin.get("/team/join-links"))
    again = as_admin.confirm(f"/team/join-links/{link_id}/revoke")
    assert "This join link was already revoked." in refused_page(as_admin, again, "/team/join-links")
    visitor = login_as(make_user())
    for response in (visitor.get(f"/join/{token}"), visitor.post_form(f"/join/{token}")):
        assert response.status_code == 410
        assert "was revoked by an admin" in page(response)
    assert members_of(admin_engine, team.id) == 4
    actions = scalar(admin_engine, "SELECT string_agg(action, ',' ORDER BY at) FROM audit_events WHERE action LIKE 'join_link.%'")
    assert actions == "join_link.created,join_link.revoked"


def test_another_teams_link_is_not_found(team, make_user, login_as, admin_engine):
    other = make_user(name="Other Owner")
    _, _ = make_link(login_as(other, other.team_id))
    their_link = join_links(admin_engine)[0]["id"]
    admin = login_as(team.accounts[A], team.id)
    assert admin.confirm(f"/team/join-links/{their_link}/revoke").status_code == 404
    assert join_links(admin_engine)[0]["revoked_at"] is None
    assert str(their_link) not in page(admin.get("/team/join-links"))


# --- joining -------------------------------------------------------------------------------------


def test_a_verified_user_sees_the_team_and_role_then_joins_with_one_use(team, as_admin, login_as, make_user, admin_engine):
    _, token = make_link(as_admin, role="viewer")
    team_name = scalar(admin_engine, "SELECT name FROM tenants WHERE id = :t", t=team.id)
    joiner = make_user(name="Jo Joiner")
    client = login_as(joiner)
    for _ in range(2):  # showing it (a preview, a reload) never uses it
        shown = client.get(f"/join/{token}")
        assert shown.status_code == 200
        assert shown.headers["Referrer-Policy"] == "strict-origin"
        text_only = re.sub(r"<[^>]+>", "", page(shown))
        assert f"This link lets you join {team_name} as viewer." in text_only
        assert f"Join {team_name}" in text_only  # the button
    assert join_links(admin_engine)[0]["uses"] == 0

    joined = client.post_form(f"/join/{token}")
    assert joined.status_code == 303
    assert joined.headers["Location"] == "/team/"
    overview = page(client.get("/team/"))
    assert "You joined as viewer" in overview
    assert "Admin Person" in overview  # the team's page: it is the active team now
    role = scalar(
        admin_engine, "SELECT role FROM tenant_members WHERE tenant_id = :t AND user_id = :u", t=team.id, u=joiner.user_id
    )
    assert role == "viewer"
    assert join_links(admin_engine)[0]["uses"] == 1
    (event,) = dicts(admin_engine, "SELECT actor_id, target, details FROM audit_events WHERE action = 'join_link.joined'")
    assert (event["actor_id"], event["target"], event["details"]["role"]) == (joiner.user_id, joiner.email, "viewer")

    again = client.post_form(f"/join/{token}")  # already a member: said so, no use spent
    assert again.status_code == 303
    assert "already a member" in page(client.get("/team/"))
    assert "already a member" in page(client.get(f"/join/{token}"))
    assert join_links(admin_engine)[0]["uses"] == 1


def test_showing_a_link_looks_it_up_once(app, team, as_admin, login_as, make_user):
    _, token = make_link(as_admin)
    client = login_as(make_user())
    assert statements_for(app, client, f"/join/{token}", mentioning="FROM join_links") == 1


def test_anonymous_visitors_are_sent_to_log_in_and_come_back(team, as_admin, anonymous, admin_engine):
    _, token = make_link(as_admin)
    shown = anonymous.get(f"/join/{token}")
    assert shown.status_code == 200
    assert f"/auth/login?next=/join/{token}" in page(shown)
    assert "/auth/signup" in page(shown)
    posted = anonymous.post_form(f"/join/{token}")
    assert posted.status_code == 302
    assert posted.headers["Location"].startswith("/auth/login")
    assert members_of(admin_engine, team.id) == 4


def test_an_unverified_account_is_told_to_verify_and_joins_nothing(team, as_admin, login_as, make_user, admin_engine):
    _, token = make_link(as_admin)
    client = login_as(make_user(verified=False))
    shown = client.get(f"/join/{token}")
    assert shown.status_code == 403
    assert "Verify your e-mail address first" in page(shown)
    posted = client.post_form(f"/join/{token}")
    assert posted.status_code == 403
    assert "Verify your e-mail address first" in page(posted)
    assert (members_of(admin_engine, team.id), join_links(admin_engine)[0]["uses"]) == (4, 0)


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ("expires_at = now() - interval '1 minute'", 410, "expired on"),
        ("revoked_at = now()", 410, "was revoked"),
        ("uses = max_uses", 410, "has been used as many times as it allows (5)"),
        ("allowed_domains = 'nyx.example'", 403, "only for addresses at nyx.example"),
    ],
)
def test_every_dead_link_says_why(team, as_admin, login_as, make_user, anonymous, admin_engine, change, status, reason):
    _, token = make_link(as_admin)
    with admin_engine.begin() as conn:
        conn.execute(text(f"UPDATE join_links SET {change}"))
    client = login_as(make_user())
    for response in (client.get(f"/join/{token}"), client.post_form(f"/join/{token}")):
        assert response.status_code == status
        assert reason in page(response)
    assert members_of(admin_engine, team.id) == 4
    if status == 410:  # dead for everyone, said before any log in
        assert anonymous.get(f"/join/{token}").status_code == 410


def test_an_allowed_domain_joins(team, as_admin, login_as, make_user, admin_engine):
    _, token = make_link(as_admin, domains="nyx.example")
    client = login_as(make_user(email="ada@NYX.example".lower()))
    assert client.post_form(f"/join/{token}").status_code == 303
    assert members_of(admin_engine, team.id) == 5


def test_a_links_domains_are_read_as_the_teams_allowlist_is_idns_too(team, as_admin, as_owner, login_as, make_user, admin_engine):
    """One parser for both lists: an internationalised domain is accepted and compared the same way."""
    _, token = make_link(as_admin, domains="@Bücher.Example, nyx.example")
    assert token is not None
    assert as_owner.post_form("/team/domains/allowlist", {"allowed_domains": "Bücher.Example nyx.example"}).status_code == 302
    stored = scalar(admin_engine, "SELECT allowed_email_domains FROM tenants WHERE id = :t", t=team.id)
    assert join_links(admin_engine)[0]["allowed_domains"] == stored
    assert login_as(make_user(email="ada@bücher.example")).post_form(f"/join/{token}").status_code == 303


def test_the_teams_domain_policy_applies_to_join_links_too(team, as_admin, login_as, make_user, admin_engine):
    _, token = make_link(as_admin)  # the link itself is for any domain
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET allowed_email_domains = 'nyx.example' WHERE id = :t"), {"t": team.id})
    outsider = make_user(email="eve@elsewhere.example")
    client = login_as(outsider)
    for response in (client.get(f"/join/{token}"), client.post_form(f"/join/{token}")):
        assert response.status_code == 403
        assert "eve@elsewhere.example is not at a domain" in page(response)
    assert (members_of(admin_engine, team.id), join_links(admin_engine)[0]["uses"]) == (4, 0)
    assert login_as(make_user(email="ida@nyx.example")).post_form(f"/join/{token}").status_code == 303


def test_unknown_or_malformed_links_are_404(client, login_as, make_user):
    signed_in = login_as(make_user())
    for visitor in (client, signed_in):
        for path in ("/join/" + "x" * 43, "/join/short", "/join/" + "a" * 44):
            assert visitor.get(path).status_code == 404
            assert visitor.post_form(path).status_code == 404


def test_twenty_concurrent_joins_on_five_uses_make_exactly_five_members(team, as_admin, newcomers, admin_engine):
    _, token = make_link(as_admin, max_uses="5")
    people = newcomers(20)
    statuses = run_together([(c, f"/join/{token}") for _, c in people])
    assert sorted(statuses) == [303] * 5 + [410] * 15
    assert members_of(admin_engine, team.id) == 4 + 5
    assert join_links(admin_engine)[0]["uses"] == 5
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'join_link.joined'") == 5


# --- seats ---------------------------------------------------------------------------------------


def set_seats(client: Any, value: str) -> Any:
    return client.post_form("/team/settings/seats", {"seats-seat_limit": value})


def test_the_owner_sets_a_seat_limit_and_the_team_page_shows_seats_used(team, as_owner, as_viewer, admin_engine):
    assert "4 members" in page(as_viewer.get("/team/"))
    assert 'name="seats-seat_limit"' in page(as_owner.get("/team/settings"))
    assert set_seats(as_owner, "6").status_code == 302
    assert scalar(admin_engine, "SELECT seat_limit FROM tenants WHERE id = :t", t=team.id) == 6
    assert as_owner.post_form("/team/invitations", {"emails": "guest@example.com", "role": "member"}).status_code == 200
    for client in (as_owner, as_viewer):
        assert "Seats: 5 of 6 used" in page(client.get("/team/"))
    assert "Seats: 5 of 6 used" in page(as_viewer.get("/team/?q=olive"))  # a search counts every seat
    assert "Seats: 5 of 6 used" in page(as_viewer.get(f"/team/?after={PAST_THE_END}"))  # no row carries it
    assert set_seats(as_owner, "").status_code == 302
    assert scalar(admin_engine, "SELECT seat_limit FROM tenants WHERE id = :t", t=team.id) is None
    events = dicts(admin_engine, "SELECT details FROM audit_events WHERE action = 'team.seat_limit_changed' ORDER BY at")
    assert [(e["details"]["old"], e["details"]["new"]) for e in events] == [(None, 6), (6, None)]


@pytest.mark.parametrize(("value", "message"), [("3", "The team has 4 members"), ("0", "from 1 to"), ("many", "Not a valid integer")])
def test_a_seat_limit_below_the_members_or_not_a_number_is_refused(team, as_owner, admin_engine, value, message):
    response = set_seats(as_owner, value)
    assert response.status_code in (400, 409)
    assert message in page(response)
    assert scalar(admin_engine, "SELECT seat_limit FROM tenants WHERE id = :t", t=team.id) is None


def test_only_owners_set_seats(team, as_admin):
    assert set_seats(as_admin, "9").status_code == 403
    assert 'name="seats-seat_limit"' not in page(as_admin.get("/team/settings"))


def test_invitations_and_join_links_stop_at_the_seat_limit(team, as_owner, as_admin, login_as, make_user, admin_engine):
    set_seats(as_owner, "5")
    refused = as_admin.post_form("/team/invitations", {"emails": "a@example.com\nb@example.com", "role": "member"})
    assert refused.status_code == 409
    assert "room for 1 more" in page(refused)
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 0
    _, token = make_link(as_admin)
    assert as_admin.post_form("/team/invitations", {"emails": "a@example.com", "role": "member"}).status_code == 200
    full = login_as(make_user()).post_form(f"/join/{token}")
    assert full.status_code == 409
    assert "there is room for 0 more" in page(full)
    assert join_links(admin_engine)[0]["uses"] == 0  # a refused join spends no use


def test_twenty_concurrent_joins_never_pass_the_seat_limit(team, as_owner, as_admin, newcomers, admin_engine):
    _, token = make_link(as_admin, max_uses="100")
    set_seats(as_owner, "7")
    statuses = run_together([(c, f"/join/{token}") for _, c in newcomers(20)])
    assert sorted(statuses) == [303] * 3 + [409] * 17
    assert members_of(admin_engine, team.id) == 7
    assert join_links(admin_engine)[0]["uses"] == 3


def test_twenty_concurrent_acceptances_never_pass_the_seat_limit(team, as_owner, newcomers, admin_engine):
    people = newcomers(20)
    tokens = [secrets.token_urlsafe(32) for _ in people]
    with admin_engine.begin() as conn:  # twenty open invitations, made before the limit was set
        for (account, _), token in zip(people, tokens, strict=True):
            conn.execute(
                text(
                    "INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, expires_at) "
                    "VALUES (gen_random_uuid(), :t, :h, :e, 'member', :by, now() + interval '1 day')"
                ),
                {"t": team.id, "h": hashlib.sha256(token.encode()).hexdigest(), "e": account.email, "by": team.accounts[TenantRole.OWNER].user_id},
            )
    assert set_seats(as_owner, "10").status_code == 302  # 4 members: room for 6 of the 20
    statuses = run_together([(c, f"/invite/{t}") for (_, c), t in zip(people, tokens, strict=True)])
    assert sorted(statuses) == [302] * 6 + [409] * 14
    assert members_of(admin_engine, team.id) == 10
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NOT NULL") == 6
