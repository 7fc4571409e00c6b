"""The account page: name, password, sessions one can see and end, and deleting one's account.

Against PostgreSQL with the app role: what the database holds afterwards is read with `admin_engine`
(past RLS), and every "signed out" is a saved cookie replayed on its next request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import text

from nyxcore.roles import TenantRole
from tests.conftest import PASSWORD
from tests.helpers import count, member_id, rows, scalar, scalar_or_none

NEW_PASSWORD = "a brand new passphrase for this account"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def _signed_in(client: Any, path: str = "/account") -> bool:
    """Whether the client's next request is still signed in (else it is sent to log in)."""
    response = client.get(path)
    if response.status_code == 302:
        assert response.location.startswith("/auth/login")
        return False
    assert response.status_code == 200
    return True


def _replayed(make_client: Any, cookie: str) -> bool:
    """Whether a saved session cookie, replayed from another browser, still signs anyone in."""
    thief = make_client()
    thief.set_cookie("session", cookie)
    return _signed_in(thief)


def _cookie(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def _revoke_actions(page: str) -> list[str]:
    return re.findall(r'href="(/account/sessions/[0-9a-f-]+/revoke)"', page)


def _login_from(make_client: Any, email: str, user_agent: str, address: str) -> Any:
    c = make_client()
    response = c.post_form(
        "/auth/login",
        {"email": email, "password": PASSWORD},
        headers={"User-Agent": user_agent},
        environ_base={"REMOTE_ADDR": address},
    )
    assert response.status_code == 302
    return c


# --- the page ---------------------------------------------------------------------------------------


def test_the_page_shows_name_email_and_live_sessions_in_words(make_user, make_client):
    account = make_user(name="Ada Lovelace")
    laptop = _login_from(make_client, account.email, FIREFOX, "203.0.113.5")
    _login_from(make_client, account.email, IPHONE, "198.51.100.9")
    page = laptop.get("/account").get_data(as_text=True)
    assert "Ada Lovelace" in page and account.email in page
    assert "Where you are signed in (2)" in page
    assert "Firefox on Linux" in page and "203.0.113.5" in page
    assert "Safari on iOS" in page and "198.51.100.9" in page
    # This browser is marked, comes first, and offers a log out instead of a revoke of itself.
    marker = page.index("<span class=\"badge\">this browser</span>")
    assert page.index("Firefox on Linux") < marker < page.index("Safari on iOS")
    assert len(_revoke_actions(page)) == 1


def test_the_top_bar_name_links_to_the_account_page(make_user, login_as):
    client = login_as(make_user(name="Grace Hopper"))
    page = client.get("/team/").get_data(as_text=True)
    assert '<a class="who" href="/account" title="Your account">Grace Hopper</a>' in page


def test_a_user_in_no_team_still_has_an_account_page(make_user, login_as, admin_engine):
    account = make_user()
    client = login_as(account)
    with admin_engine.begin() as conn:
        conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": account.team_id})
    assert client.get("/account").status_code == 200


def test_anonymous_visitors_are_sent_to_log_in(anonymous):
    for response in (anonymous.get("/account"), anonymous.post_form("/account/name", {"name": "X"})):
        assert response.status_code == 302
        assert response.location.startswith("/auth/login")


# --- name -----------------------------------------------------------------------------------------


def test_change_name_and_the_header_shows_it(make_user, login_as, admin_engine):
    account = make_user(name="Old Name")
    client = login_as(account)
    response = client.post_form("/account/name", {"name": "  New Name  "})
    assert response.status_code == 302 and response.location == "/account"
    page = client.get("/account").get_data(as_text=True)
    assert "Your name was changed." in page
    assert '<a class="who" href="/account" title="Your account">New Name</a>' in page
    assert scalar(admin_engine, "SELECT name FROM users WHERE id = :u", u=account.user_id) == "New Name"


def test_an_empty_or_too_long_name_is_a_form_error_and_changes_nothing(make_user, login_as, admin_engine):
    account = make_user(name="Kept Name")
    client = login_as(account)
    for name in ("", "   ", "x" * 121):
        response = client.post_form("/account/name", {"name": name})
        assert response.status_code == 400, name
        assert 'class="error"' in response.get_data(as_text=True)
    assert client.post_form("/account/name", {"name": "y" * 120}).status_code == 302
    assert scalar(admin_engine, "SELECT name FROM users WHERE id = :u", u=account.user_id) == "y" * 120


# --- password -------------------------------------------------------------------------------------


def _password_form(current: str, new: str = NEW_PASSWORD, again: str | None = None) -> dict[str, str]:
    return {"current_password": current, "password": new, "confirm_password": new if again is None else again}


def test_a_wrong_current_password_is_a_form_error_and_changes_nothing(make_user, login_as, admin_engine):
    account = make_user()
    elsewhere, here = login_as(account), login_as(account)
    stored = scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :u", u=account.user_id)
    response = here.post_form("/account/password", _password_form("not my password at all"))
    assert response.status_code == 400
    assert "That is not your current password." in response.get_data(as_text=True)
    assert scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :u", u=account.user_id) == stored
    assert _signed_in(elsewhere) and _signed_in(here)
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NOT NULL") == 0


def test_a_short_or_mistyped_new_password_is_a_form_error(make_user, login_as, admin_engine):
    account = make_user()
    client = login_as(account)
    stored = scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :u", u=account.user_id)
    short = client.post_form("/account/password", _password_form(PASSWORD, "short"))
    assert short.status_code == 400 and "Use at least 12 characters." in short.get_data(as_text=True)
    differ = client.post_form("/account/password", _password_form(PASSWORD, again=NEW_PASSWORD + "!"))
    assert differ.status_code == 400 and "The two new passwords differ." in differ.get_data(as_text=True)
    assert scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :u", u=account.user_id) == stored


def test_changing_the_password_signs_out_every_other_session_and_keeps_this_one(
    make_user, login_as, make_client, admin_engine
):
    account = make_user()
    elsewhere, here = login_as(account), login_as(account)
    saved_elsewhere = _cookie(elsewhere)
    response = here.post_form("/account/password", _password_form(PASSWORD))
    assert response.status_code == 302
    assert "Your password was changed. Any other browser signed in as you was signed out." in here.get("/account").get_data(as_text=True)
    assert _signed_in(here)
    assert not _signed_in(elsewhere)
    assert not _replayed(make_client, saved_elsewhere)
    stored = scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :u", u=account.user_id)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and NEW_PASSWORD not in stored
    assert make_client().login(account.email, PASSWORD).status_code == 400
    assert make_client().login(account.email, NEW_PASSWORD).status_code == 302


# --- sessions -------------------------------------------------------------------------------------


def test_revoking_a_session_sends_its_saved_cookie_to_log_in(make_user, login_as, make_client, admin_engine):
    account = make_user()
    phone, laptop = login_as(account), login_as(account)
    saved_phone = _cookie(phone)
    (revoke,) = _revoke_actions(laptop.get("/account").get_data(as_text=True))
    response = laptop.confirm(revoke)
    assert response.status_code == 302 and response.location == "/account"
    assert not _replayed(make_client, saved_phone)
    assert not _signed_in(phone)
    assert _signed_in(laptop)
    assert _revoke_actions(laptop.get("/account").get_data(as_text=True)) == []
    assert laptop.confirm(revoke).status_code == 404  # already ended: not a live session any more
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL") == 1


def test_revoking_this_browser_signs_it_out(make_user, login_as, admin_engine):
    account = make_user()
    client = login_as(account)
    (mine,) = scalar(admin_engine, "SELECT array_agg(id) FROM user_sessions WHERE user_id = :u", u=account.user_id)
    response = client.confirm(f"/account/sessions/{mine}/revoke")
    assert response.status_code == 302 and response.location.startswith("/auth/login")
    assert not _signed_in(client)


def test_revoking_another_users_session_is_a_404_and_changes_nothing(make_user, login_as, admin_engine):
    mallory, victim = make_user(), make_user()
    attacker, target = login_as(mallory), login_as(victim)
    theirs = scalar(admin_engine, "SELECT id FROM user_sessions WHERE user_id = :u", u=victim.user_id)
    for session_id in (theirs, uuid.uuid4()):
        response = attacker.confirm(f"/account/sessions/{session_id}/revoke")
        assert response.status_code == 404
    assert attacker.confirm("/account/sessions/not-a-uuid/revoke").status_code == 404
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NOT NULL") == 0
    assert _signed_in(target) and _signed_in(attacker)


def test_revoking_without_a_csrf_token_is_refused(make_user, login_as, admin_engine):
    account = make_user()
    phone, laptop = login_as(account), login_as(account)
    (revoke,) = _revoke_actions(laptop.get("/account").get_data(as_text=True))
    assert laptop.post(revoke).status_code == 400
    assert laptop.post("/account/sessions/end-all").status_code == 400
    assert _signed_in(phone) and _signed_in(laptop)


def test_sign_out_everywhere_ends_every_session_this_one_too(make_user, login_as, make_client, admin_engine):
    account = make_user()
    clients = [login_as(account) for _ in range(3)]
    saved = [_cookie(c) for c in clients]
    response = clients[0].confirm("/account/sessions/end-all")
    assert response.status_code == 302 and response.location == "/auth/login"
    assert "You were signed out everywhere" in clients[0].get("/auth/login").get_data(as_text=True)
    for cookie in saved:
        assert not _replayed(make_client, cookie)
    assert not any(_signed_in(c) for c in clients)
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL") == 0


# --- deleting the account ------------------------------------------------------------------------


def _delete(client: Any, email: str, password: str = PASSWORD) -> Any:
    return client.post_form("/account/delete", {"confirm_email": email, "password": password})


def test_the_last_owner_of_a_team_with_members_cannot_delete_their_account(team, as_owner, admin_engine):
    owner = team.accounts[TenantRole.OWNER]
    page = as_owner.get("/account/delete").get_data(as_text=True)
    assert "First, hand over these teams" in page and "Olive&#39;s team" in page
    assert 'action="/account/delete"' not in page  # no form to fill in while it would be refused
    assert "make someone else an owner" in page
    response = _delete(as_owner, owner.email)  # posted all the same
    body = response.get_data(as_text=True)
    assert response.status_code == 409
    assert '<div class="notice warn" role="alert">' in body and "<strong>Olive&#39;s team</strong>" in body
    assert count(admin_engine, "SELECT count(*) FROM users WHERE id = :u", u=owner.user_id) == 1
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE tenant_id = :t", t=team.id) == 4
    assert _signed_in(as_owner)


def test_a_wrong_confirmation_or_password_deletes_nothing(make_user, login_as, admin_engine):
    account = make_user()
    client = login_as(account)
    wrong_email = _delete(client, "someone.else@example.com")
    assert wrong_email.status_code == 400
    assert "Type your e-mail address exactly as shown to confirm." in wrong_email.get_data(as_text=True)
    wrong_password = _delete(client, account.email.upper(), "not my password at all")
    assert wrong_password.status_code == 400
    assert "That is not your current password." in wrong_password.get_data(as_text=True)
    assert _delete(client, "", "").status_code == 400
    assert count(admin_engine, "SELECT count(*) FROM users WHERE id = :u", u=account.user_id) == 1
    assert count(admin_engine, "SELECT count(*) FROM tenants WHERE id = :t", t=account.team_id) == 1
    assert _signed_in(client)


def test_deleting_an_account_takes_its_solo_teams_and_leaves_shared_ones_with_its_name(
    team, make_user, add_member, login_as, make_client, admin_engine
):
    leaver = make_user(name="Lena Leaver")
    add_member(team.id, leaver, TenantRole.ADMIN)
    client = login_as(leaver, team.id)
    # Something of hers in the shared team's audit log, and an invitation she sent there.
    viewer = team.accounts[TenantRole.VIEWER]
    changed = client.post_form(
        f"/team/members/{member_id(admin_engine, team.id, viewer.user_id)}/role", {"role": "member"}
    )
    assert changed.status_code == 302
    assert client.post_form("/team/invitations", {"emails": "pal@example.com", "role": "member"}).status_code == 200
    assert client.post_form("/teams/new", {"name": "Lena Solo Two"}).status_code == 302
    solo_teams = [row.id for row in rows(admin_engine, "SELECT tenant_id AS id FROM tenant_members WHERE user_id = :u AND tenant_id <> :t", u=leaver.user_id, t=team.id)]
    assert len(solo_teams) == 2
    other_browser = login_as(leaver)
    saved = _cookie(other_browser)

    page = client.get("/account/delete").get_data(as_text=True)
    assert "Lena Solo Two" in page and "Lena&#39;s team" in page and "First, hand over" not in page
    response = _delete(client, leaver.email)
    assert response.status_code == 302 and response.location == "/auth/login"
    assert "Your account was deleted." in client.get("/auth/login").get_data(as_text=True)

    assert count(admin_engine, "SELECT count(*) FROM users WHERE id = :u", u=leaver.user_id) == 0
    assert count(admin_engine, "SELECT count(*) FROM tenants WHERE id = ANY(:t)", t=solo_teams) == 0
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE user_id = :u", u=leaver.user_id) == 0
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE user_id = :u", u=leaver.user_id) == 0
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE tenant_id = :t", t=team.id) == 4
    assert scalar_or_none(admin_engine, "SELECT revoked_at IS NOT NULL FROM invitations WHERE email = 'pal@example.com'")
    kept = rows(admin_engine, "SELECT actor_id, actor_name, action FROM audit_events WHERE tenant_id = :t AND action IN ('member.role_changed', 'member.left')", t=team.id)
    assert {(r.actor_id, r.actor_name, r.action) for r in kept} == {
        (None, "Lena Leaver", "member.role_changed"),
        (None, "Lena Leaver", "member.left"),
    }
    assert not _replayed(make_client, saved) and not _signed_in(client)
    audit = login_as(team.accounts[TenantRole.OWNER], team.id).get("/team/audit").get_data(as_text=True)
    assert "Lena Leaver <span class=\"muted\">(account deleted)</span>" in audit


def test_an_owner_among_owners_may_delete_their_account(team, make_user, add_member, login_as, admin_engine):
    second = make_user(name="Second Owner")
    add_member(team.id, second, TenantRole.OWNER)
    client = login_as(second, team.id)
    assert _delete(client, second.email).status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE tenant_id = :t AND role = 'owner'", t=team.id) == 1
    assert count(admin_engine, "SELECT count(*) FROM users WHERE id = :u", u=second.user_id) == 0


def test_the_audit_log_names_an_actor_who_left_the_team(team, as_owner, login_as, admin_engine):
    member = team.accounts[TenantRole.MEMBER]
    leaving = login_as(member, team.id)
    assert leaving.confirm("/team/leave").status_code == 303
    page = as_owner.get("/team/audit").get_data(as_text=True)
    assert "Member Person <span class=\"muted\">(no longer in this team)</span>" in page


def test_the_forms_that_check_a_password_are_rate_limited_like_log_in(app_config, request, admin_engine):
    # A stolen session must not turn them into a password-guessing oracle.
    app_config.update(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3 per minute")
    account = request.getfixturevalue("make_user")()
    client = request.getfixturevalue("make_client")()
    n = uuid.uuid4().int  # an address no other run uses: the counters live in the shared Redis
    client.environ_base["REMOTE_ADDR"] = f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}.{(n >> 16) % 250 + 1}"
    assert client.login(account.email).status_code == 302
    guesses = [client.post_form("/account/password", _password_form(f"guess {i}")).status_code for i in range(4)]
    assert guesses == [400, 400, 400, 429]
    deletes = [_delete(client, account.email, f"guess {i}").status_code for i in range(4)]
    assert deletes == [400, 400, 400, 429]
    assert client.get("/account/delete").status_code == 200  # only attempts count
    assert count(admin_engine, "SELECT count(*) FROM users WHERE id = :u", u=account.user_id) == 1
