"""Issue 17: every destructive action asks first, on one confirm page, and refusals redirect (post/redirect/get).

Each action's address answers GET with a page saying what will happen; the page's form (CSRF token
and `confirmed=yes`) is the only way to act. A POST that skipped the page is sent there (303) and
changes nothing; the page needs the action's role, and another team's object is a 404 there too.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text as sql_text

from nyxcore.roles import TenantRole
from tests.helpers import count, member_id, recorded_statements, refused_page, scalar

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


def text(response: Any) -> str:
    """The page as a person reads it (entities decoded)."""
    return html.unescape(response.get_data(as_text=True))


def words(response: Any) -> str:
    """The page's text without its tags."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text(response)))


def created_id(admin_engine: Any, table: str) -> str:
    return str(scalar(admin_engine, f"SELECT id FROM {table} ORDER BY created_at DESC LIMIT 1"))


def note(client: Any, admin_engine: Any) -> str:
    assert client.post_form("/notes/new", {"title": "Runbook", "body": "Restart it."}).status_code == 302
    return created_id(admin_engine, "notes")


def wardrobe_item(client: Any, admin_engine: Any) -> str:
    assert client.post_form("/wardrobe/new", {"name": "Blue jacket"}).status_code == 302
    return created_id(admin_engine, "wardrobe_items")


def invitation(client: Any, admin_engine: Any) -> str:
    sent = client.post_form("/team/invitations", {"emails": "dana@example.com", "role": "member"})
    assert sent.status_code == 200
    return created_id(admin_engine, "invitations")


def join_link(client: Any, admin_engine: Any) -> str:
    data = {"role": "member", "days": "7", "max_uses": "5", "domains": ""}
    assert client.post_form("/team/join-links", data).status_code == 200
    return created_id(admin_engine, "join_links")


def domain(client: Any, admin_engine: Any) -> str:
    data = {"domain": f"d{uuid.uuid4().hex[:8]}.example.com", "join_mode": "request", "join_role": "member"}
    assert client.post_form("/team/domains", data).status_code == 302
    return created_id(admin_engine, "team_domains")


@dataclass(frozen=True)
class Case:
    """One destructive action: who may do it, its object (made by `make`), what the page says, and its row."""

    role: TenantRole
    path: str  # {id} is the object's id
    says: str
    table: str  # the row that must still be there until confirmed ({id} again)
    make: Callable[[Any, Any], str] | None = None


def _member_of(team: Any, admin_engine: Any) -> str:
    return str(member_id(admin_engine, team.id, team.accounts[M].user_id))


CASES = {
    "remove member": Case(
        A, "/team/members/{id}/remove", "Member Person loses access to Olive's team's members, notes",
        "SELECT count(*) FROM tenant_members WHERE id = '{id}'",
    ),
    "leave": Case(
        M, "/team/leave", "You lose access to Olive's team's members, notes, wardrobe and GitHub",
        "SELECT count(*) FROM tenant_members WHERE id = '{id}'",
    ),
    "transfer": Case(
        O, "/team/transfer?transfer-member_id={id}", "Member Person becomes an owner and you become an admin",
        "SELECT count(*) FROM tenant_members WHERE id = '{id}' AND role = 'member'",
    ),
    "delete team": Case(
        O, "/team/delete", "Olive's team is deleted with its members' access", "SELECT count(*) FROM tenants"
    ),
    "delete note": Case(
        M, "/notes/{id}/delete", "The note and its text are deleted for everyone in Olive's team",
        "SELECT count(*) FROM notes WHERE id = '{id}'", note,
    ),
    "remove wardrobe item": Case(
        M, "/wardrobe/{id}/delete", "“Blue jacket” and its notes are removed for everyone",
        "SELECT count(*) FROM wardrobe_items WHERE id = '{id}'", wardrobe_item,
    ),
    "revoke invitation": Case(
        A, "/team/invitations/{id}/revoke", "The invitation link sent to dana@example.com stops working",
        "SELECT count(*) FROM invitations WHERE id = '{id}' AND revoked_at IS NULL", invitation,
    ),
    "revoke join link": Case(
        A, "/team/join-links/{id}/revoke", "The link stops working at once: nobody else joins Olive's team",
        "SELECT count(*) FROM join_links WHERE id = '{id}' AND revoked_at IS NULL", join_link,
    ),
    "remove domain": Case(
        O, "/team/domains/{id}/remove", "no longer see Olive's team under “Teams you can join”",
        "SELECT count(*) FROM team_domains WHERE id = '{id}'", domain,
    ),
    "disconnect GitHub": Case(
        O, "/github/disconnect", "nobody in Olive's team can browse its repositories", "SELECT 1"
    ),
    "sign out everywhere": Case(
        M, "/account/sessions/end-all", "Every browser where you are signed in is signed out, this one too",
        "SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL AND id = '{id}'",
    ),
}


def _open(case: Case, team: Any, login_as: Any, admin_engine: Any) -> tuple[Any, str, str]:
    """A client of the case's role, the action's path and its row check, with the object made."""
    client = login_as(team.accounts[case.role], team.id)
    if case.make is not None:
        object_id = case.make(client, admin_engine)
    elif "sessions" in case.table:
        object_id = str(scalar(admin_engine, "SELECT id FROM user_sessions ORDER BY created_at DESC LIMIT 1"))
    else:
        object_id = _member_of(team, admin_engine)
    return client, case.path.format(id=object_id), case.table.format(id=object_id)


@pytest.mark.parametrize("name", CASES)
def test_the_confirm_page_says_what_will_happen_and_is_the_only_way_to_act(
    name, team, login_as, admin_engine
):
    case = CASES[name]
    client, path, still_there = _open(case, team, login_as, admin_engine)
    before = count(admin_engine, still_there)
    shown = client.get(path)
    assert shown.status_code == 200
    page = text(shown)
    assert case.says in page
    section = page[page.index('<section class="card confirm"') :]
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', section, re.S)
    assert form and form.group(1) == path
    assert 'name="confirmed" value="yes"' in form.group(2) and 'name="csrf_token"' in form.group(2)
    assert re.search(r'<a class="button" href="[^"]+">Cancel</a>', page)
    # A POST that did not come from the page (an old one-click form) lands on it and changes nothing.
    skipped = client.post_form(path.split("?")[0], dict(_query(path)))
    assert (skipped.status_code, skipped.location) == (303, path.split("?")[0] + _query_string(path))
    assert count(admin_engine, still_there) == before


def _query(path: str) -> list[tuple[str, str]]:
    query = path.partition("?")[2]
    return [tuple(pair.split("=", 1)) for pair in query.split("&") if pair]  # type: ignore[misc]


def _query_string(path: str) -> str:
    return "?" + path.partition("?")[2] if "?" in path else ""


@pytest.mark.parametrize("name", ["remove member", "delete note", "remove wardrobe item", "revoke invitation",
                                  "revoke join link", "remove domain", "transfer"])
def test_confirming_acts(name, team, login_as, admin_engine):
    case = CASES[name]
    client, path, still_there = _open(case, team, login_as, admin_engine)
    response = client.confirm(path.split("?")[0], dict(_query(path)))
    assert response.status_code == 302
    assert count(admin_engine, still_there) == 0


@pytest.mark.parametrize(
    ("role", "path"),
    [
        (V, "/team/members/{mid}/remove"),
        (M, "/team/members/{mid}/remove"),
        (A, "/team/members/{oid}/remove"),  # an admin cannot remove an owner
        (A, "/team/transfer?transfer-member_id={mid}"),
        (A, "/team/delete"),
        (V, "/team/invitations/{random}/revoke"),
        (M, "/team/join-links/{random}/revoke"),
        (A, "/team/domains/{random}/remove"),
        (A, "/github/disconnect"),
    ],
)
def test_the_confirm_page_needs_the_actions_role(role, path, team, login_as, admin_engine):
    client = login_as(team.accounts[role], team.id)
    fill = {
        "mid": member_id(admin_engine, team.id, team.accounts[M].user_id),
        "oid": member_id(admin_engine, team.id, team.accounts[O].user_id),
        "random": uuid.uuid4(),
    }
    assert client.get(path.format(**fill)).status_code == 403


@pytest.mark.parametrize(
    "kind", ["member", "note", "wardrobe", "invitation", "join link", "domain", "session", "unknown note"]
)
def test_another_teams_object_is_a_404_on_the_confirm_page(kind, team, make_user, login_as, admin_engine):
    stranger = make_user(name="Stranger")
    theirs = login_as(stranger, stranger.team_id)
    made = {
        "member": lambda: f"/team/members/{member_id(admin_engine, stranger.team_id, stranger.user_id)}/remove",
        "note": lambda: f"/notes/{note(theirs, admin_engine)}/delete",
        "wardrobe": lambda: f"/wardrobe/{wardrobe_item(theirs, admin_engine)}/delete",
        "invitation": lambda: f"/team/invitations/{invitation(theirs, admin_engine)}/revoke",
        "join link": lambda: f"/team/join-links/{join_link(theirs, admin_engine)}/revoke",
        "domain": lambda: f"/team/domains/{domain(theirs, admin_engine)}/remove",
        "session": lambda: f"/account/sessions/{scalar(admin_engine, 'SELECT id FROM user_sessions WHERE user_id = :u', u=stranger.user_id)}/revoke",
        "unknown note": lambda: f"/notes/{uuid.uuid4()}/delete",
    }
    path = made[kind]()
    owner = login_as(team.accounts[O], team.id)
    assert owner.get(path).status_code == 404
    assert owner.confirm(path).status_code == 404


def test_cancel_goes_back_where_the_person_came_from(team, as_admin, admin_engine):
    path = f"/team/members/{member_id(admin_engine, team.id, team.accounts[M].user_id)}/remove"
    came_from = as_admin.get(path, headers={"Referer": "http://localhost/team/?q=member&page=1"})
    assert 'href="/team/?q=member&amp;page=1">Cancel' in came_from.get_data(as_text=True)
    told = as_admin.get(path + "?next=/team/invitations")
    assert 'href="/team/invitations">Cancel' in told.get_data(as_text=True)
    for elsewhere in ({"Referer": "https://evil.example/team/"}, {}):
        page = as_admin.get(path + "?next=//evil.example/", headers=elsewhere).get_data(as_text=True)
        assert 'href="/team/">Cancel' in page


def test_the_team_page_links_to_confirm_pages_instead_of_one_click_forms(team, as_owner, admin_engine):
    page = as_owner.get("/team/").get_data(as_text=True)
    member = member_id(admin_engine, team.id, team.accounts[M].user_id)
    assert f'href="/team/members/{member}/remove"' in page
    assert f'action="/team/members/{member}/remove"' not in page
    assert 'action="/team/leave"' not in page


# --- actions that cannot succeed ---------------------------------------------------------------------


def test_a_sole_owner_is_told_to_make_someone_else_owner_instead_of_offered_leave(team, as_owner, as_member):
    assert "You are the only owner: to leave, make someone else an owner first." in words(as_owner.get("/team/"))
    assert 'href="/team/leave"' not in as_owner.get("/team/").get_data(as_text=True)
    confirm = text(as_owner.get("/team/leave"))
    assert "A team needs at least one owner. Make someone else an owner first." in confirm
    assert 'name="confirmed"' not in confirm  # no button that would end in a refusal
    assert 'href="/team/leave"' in as_member.get("/team/").get_data(as_text=True)


def test_the_transfer_list_starts_empty_and_choosing_nobody_is_a_form_error(team, as_owner, admin_engine):
    page = as_owner.get("/team/settings").get_data(as_text=True)
    select = re.search(r'<select[^>]*name="transfer-member_id"[^>]*>(.*?)</select>', page, re.S)
    assert select
    options = re.findall(r"<option([^>]*)>", select.group(1))
    assert 'value=""' in options[0] and not any("selected" in option for option in options)
    empty = as_owner.get("/team/transfer?transfer-member_id=")
    assert empty.status_code == 400
    assert "Choose the member who becomes the owner." in empty.get_data(as_text=True)
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE role = 'owner'") >= 1
    assert scalar(
        admin_engine, "SELECT role FROM tenant_members WHERE user_id = :u AND tenant_id = :t",
        u=team.accounts[O].user_id, t=team.id,
    ) == "owner"


# --- post/redirect/get after a refusal ----------------------------------------------------------------


def test_a_refused_role_change_redirects_with_the_reason(team, as_admin, admin_engine):
    owner = member_id(admin_engine, team.id, team.accounts[O].user_id)
    refused = as_admin.post_form(f"/team/members/{owner}/role", {"role": "member"})
    assert refused.status_code == 403  # a missing role keeps its page: nothing to retry
    member = member_id(admin_engine, team.id, team.accounts[M].user_id)
    bad_date = as_admin.post_form(f"/team/members/{member}/end", {"ends_on": "2000-01-01"})
    assert "past" in refused_page(as_admin, bad_date, "/team/").lower()


def test_a_failed_delete_confirmation_redirects_and_the_reload_posts_nothing(team, as_owner, admin_engine):
    wrong = as_owner.confirm("/team/delete", {"delete-confirm_name": "nope"})
    assert "exactly to confirm" in refused_page(as_owner, wrong, "/team/delete")
    assert count(admin_engine, "SELECT count(*) FROM tenants WHERE id = :t", t=team.id) == 1


# --- an expired form keeps what was typed --------------------------------------------------------------


def test_an_expired_note_form_keeps_the_text_and_asks_to_submit_again(as_member, admin_engine):
    form = as_member.get("/notes/new").get_data(as_text=True)
    stale = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    with as_member.session_transaction() as session:  # the session that signed the token is gone
        session.pop("csrf_token")
    body = "Two hours of careful writing <b>kept</b>"
    shown = as_member.post("/notes/new", data={"csrf_token": stale, "title": "Long note", "body": body})
    page = shown.get_data(as_text=True)
    assert shown.status_code == 400
    assert "This form had expired, so nothing was saved. What you typed is below" in html.unescape(page)
    assert 'value="Long note"' in page and html.escape(body, quote=False) in page
    assert count(admin_engine, "SELECT count(*) FROM notes") == 0  # the stale token was not accepted
    fresh = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert fresh != stale
    again = as_member.post("/notes/new", data={"csrf_token": fresh, "title": "Long note", "body": body})
    assert again.status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM notes WHERE body = :b", b=body) == 1


def test_an_expired_form_whose_note_is_gone_meanwhile_answers_404_not_500(as_member, admin_engine):
    as_member.post_form("/notes/new", {"title": "Soon gone", "body": "text"})
    note = scalar(admin_engine, "SELECT id FROM notes WHERE title = 'Soon gone'")
    with as_member.session_transaction() as session:  # the token expires while the edit form is open
        session.pop("csrf_token")
    with admin_engine.begin() as conn:  # and someone deletes the note meanwhile
        conn.execute(sql_text("DELETE FROM notes WHERE id = :n"), {"n": note})
    posted = as_member.post(f"/notes/{note}/edit", data={"csrf_token": "stale", "title": "Mine", "body": "kept?"})
    assert posted.status_code == 404


def test_a_form_posted_from_another_site_by_a_signed_out_visitor_is_not_shown_back(make_client, admin_engine):
    visitor = make_client()
    visitor.get("/auth/login")  # an anonymous session with a token of its own
    posted = visitor.post(
        "/notes/new",
        data={"csrf_token": "forged", "title": "Urgent", "body": "Your account is locked: call 555-0100"},
        headers={"Origin": "https://evil.example"},
    )
    assert posted.status_code in (302, 400)
    assert "555-0100" not in posted.get_data(as_text=True)
    assert count(admin_engine, "SELECT count(*) FROM notes") == 0


def test_an_expired_one_click_action_is_still_refused(team, as_owner, admin_engine):
    member = member_id(admin_engine, team.id, team.accounts[M].user_id)
    refused = as_owner.post(f"/team/members/{member}/remove", data={"csrf_token": "stale", "confirmed": "yes"})
    assert refused.status_code == 400
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE id = :m", m=member) == 1


# --- wording -----------------------------------------------------------------------------------------


def test_a_role_change_says_an_article_and_a_same_role_change_says_so(team, as_owner, admin_engine):
    member = member_id(admin_engine, team.id, team.accounts[M].user_id)
    changed = as_owner.post_form(f"/team/members/{member}/role", {"role": "admin"}, follow_redirects=True)
    assert "Member Person is now an admin." in text(changed)
    same = as_owner.post_form(f"/team/members/{member}/role", {"role": "admin"}, follow_redirects=True)
    assert "Member Person already is an admin." in text(same)
    assert "is now" not in text(same)
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'member.role_changed'") == 1


def test_a_search_without_match_says_so_and_offers_to_clear_it(as_viewer):
    page = text(as_viewer.get("/team/?q=zzzz"))
    assert "No member matches “zzzz”." in page
    assert '<a href="/team/">Clear the search</a>' in page
    assert "Members (0)" not in page


def test_leaving_the_last_team_says_what_is_true(team, make_user, add_member, login_as, admin_engine):
    loner = make_user(name="Lone Wolf")
    add_member(team.id, loner, M)
    with admin_engine.begin() as conn:  # no personal team: Olive's team is their only one
        conn.execute(sql_text("DELETE FROM tenants WHERE id = :t"), {"t": loner.team_id})
    client = login_as(loner, team.id)
    left = client.confirm("/team/leave", follow_redirects=True)
    page = text(left)
    assert "You left Olive's team." in page
    assert "You are not in any team now: create one, or ask a team's admin for an invitation." in page
    assert "not in a team yet" not in page


def test_the_top_bar_has_invitations_and_the_audit_log_once(as_admin, as_owner):
    page = as_admin.get("/team/").get_data(as_text=True)
    nav = re.search(r'<nav aria-label="Main".*?</nav>', page, re.S).group(0)
    assert 'href="/team/invitations"' in nav
    owner_page = as_owner.get("/team/").get_data(as_text=True)
    # The main navigation is written twice, in the bar and in the phone menu (CSS shows one): leave
    # the menu's copy out, and the audit log is linked once, from the navigation only.
    shown = re.sub(r'<nav aria-label="Main" class="mainnav in-menu">.*?</nav>', "", owner_page, flags=re.S)
    assert shown.count('href="/team/audit"') == 1


def test_a_note_posted_after_the_session_ended_is_shown_to_copy_not_lost(as_member, team, admin_engine):
    with admin_engine.begin() as conn:  # the session ends (idle time, sign out everywhere) while writing
        conn.execute(sql_text("UPDATE user_sessions SET revoked_at = now()"))
    body = "Notes from the incident\nline two"
    # A browser names the page's origin on a form post (the session, and with it the token, is gone).
    posted = as_member.post_form("/notes/new", {"title": "Incident", "body": body}, headers={"Origin": "http://localhost"})
    page = text(posted)
    assert posted.status_code == 401
    assert "Your session ended before this form was sent, so nothing was saved." in page
    assert body in page and "Incident" in page
    assert 'href="/auth/login?next=/notes/new"' in page
    assert count(admin_engine, "SELECT count(*) FROM notes") == 0
    # Nothing typed, nothing to keep: the usual way to log in.
    assert as_member.post_form("/notes/new", {}).status_code == 302


def test_signing_out_another_browser_says_when_it_was_last_seen_in_the_viewers_zone(team, login_as, admin_engine):
    member = team.accounts[M]
    here, other = login_as(member, team.id), login_as(member, team.id)
    other.get("/team/")
    session_id = scalar(
        admin_engine, "SELECT id FROM user_sessions WHERE user_id = :u ORDER BY created_at DESC LIMIT 1", u=member.user_id
    )
    here.set_cookie("nyxcore_tz", "Asia/Tokyo")  # as static/zone.js reports the browser's zone
    page = text(here.get(f"/account/sessions/{session_id}/revoke"))
    assert re.search(r"last seen \d{4}-\d\d-\d\d \d\d:\d\d \(Asia/Tokyo\), is signed out at its next request", page)


@pytest.mark.parametrize(("case", "table"), [("revoke invitation", "invitations"), ("revoke join link", "join_links")])
def test_a_confirmed_action_reads_its_object_once(app, team, login_as, admin_engine, case, table):
    """The confirm page's look-up is for the page; the confirmed POST leaves it to the service (one locked read)."""
    client, path, _ = _open(CASES[case], team, login_as, admin_engine)
    with recorded_statements(app) as statements:
        assert client.confirm(path).status_code in (302, 303)
    assert sum(f"FROM {table}" in s and "FOR UPDATE" in s for s in statements) == 1


def test_a_confirmed_removal_reads_the_member_once(app, team, login_as, admin_engine):
    client, path, _ = _open(CASES["remove member"], team, login_as, admin_engine)
    with recorded_statements(app) as statements:
        assert client.confirm(path).status_code == 302
    member_reads = [s for s in statements if "FROM tenant_members LEFT OUTER JOIN users" in s]  # members.get_member
    assert len(member_reads) == 1
