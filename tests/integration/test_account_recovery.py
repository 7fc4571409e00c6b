"""Account links end to end: password reset, verified e-mail, e-mail change, and no enumeration.

A real SMTP server (aiosmtpd on loopback), a real Celery worker thread on the test Redis, and
PostgreSQL with row-level security, the app connecting as the app role. Links are read from the
messages the SMTP server received.
"""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD
from tests.helpers import count, dicts, scalar
from tests.integration.mailserver import MailServer

pytestmark = pytest.mark.usefixtures("real_delivery")  # tests/integration/conftest.py
PUBLIC_URL = "http://nyxcore.test"
NEW_PASSWORD = "a brand new passphrase"


def page(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def link_path(message: Any, prefix: str) -> str:
    """The path of the one link under `prefix` in a received message."""
    links = MailServer.links(message, PUBLIC_URL + prefix)
    assert len(links) == 1, (links, MailServer.text(message))
    return links[0].removeprefix(PUBLIC_URL)


def mail_to(server: MailServer, address: str, count_: int, subject: str) -> Any:
    """The message with `subject` to `address` among the first `count_` received."""
    found = [m for m in server.wait_for(count_) if m["To"] == address and m["Subject"] == subject]
    assert len(found) == 1, [(m["To"], m["Subject"]) for m in server.messages]
    return found[0]


def without(body: str, *addresses: str) -> str:
    """A page body less the typed addresses and the per-render CSRF token, for comparison."""
    for address in addresses:
        body = body.replace(address, "ADDRESS")
    return re.sub(r'name="csrf_token"( type="hidden")? value="[^"]+"', "CSRF", body)


def unique_address() -> str:
    """A client address no other test run uses, so that counters in the shared Redis start at zero."""
    n = uuid.uuid4().int
    return f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}.{(n >> 16) % 250 + 1}"


# --- password reset ------------------------------------------------------------------------------


def test_the_whole_password_reset_story(make_user, make_client, login_as, mail_server, worker, admin_engine):
    account = make_user(email="ada@example.com", verified=False)
    before = login_as(account)  # a browser signed in before the reset
    visitor = make_client()
    asked = visitor.post_form("/auth/forgot", {"email": "Ada@Example.com"})
    assert asked.status_code == 200
    assert "If an account uses ada@example.com, we sent a link" in page(asked)

    message = mail_to(mail_server, "ada@example.com", 1, "Reset your NyxCore password")
    path = link_path(message, "/auth/reset/")
    token = path.removeprefix("/auth/reset/")
    assert PUBLIC_URL + path in MailServer.html(message)
    stored = dicts(admin_engine, "SELECT token_hash, used_at, expires_at - created_at AS ttl FROM account_tokens")
    assert stored[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()  # never the raw token
    assert round(stored[0]["ttl"].total_seconds() / 60) == 60  # an hour
    for _ in range(2):  # showing the form (a mail scanner, a reload) never uses the link
        shown = visitor.get(path)
        assert shown.status_code == 200 and "Choose a new password" in page(shown)
        assert shown.headers["Referrer-Policy"] == "strict-origin"
    assert visitor.post_form(path, {"password": "short"}).status_code == 400  # refused, link still good
    assert scalar(admin_engine, "SELECT used_at FROM account_tokens") is None

    done = visitor.post_form(path, {"password": NEW_PASSWORD})
    assert done.status_code == 303 and done.location == "/auth/login"
    assert "Your password was changed" in page(visitor.get("/auth/login"))
    assert make_client().login("ada@example.com", PASSWORD).status_code == 400  # the old one is refused
    assert make_client().login("ada@example.com", NEW_PASSWORD).status_code == 302
    again = visitor.get(path)
    assert again.status_code == 410
    assert "This link was already used." in page(again) and 'href="/auth/forgot"' in page(again)
    assert visitor.post_form(path, {"password": "yet another passphrase"}).status_code == 410
    signed_out = before.get("/team/")  # the cookie saved before the reset signs in no one
    assert signed_out.status_code == 302 and signed_out.location.startswith("/auth/login")
    assert scalar(admin_engine, "SELECT email_verified_at FROM users") is not None  # a reset proves the address

    notice = mail_to(mail_server, "ada@example.com", 2, "Your NyxCore password was changed")
    assert "If it wasn't you" in MailServer.text(notice)
    assert MailServer.links(notice, PUBLIC_URL + "/auth/reset/") == []


def test_an_unknown_or_expired_reset_link_says_why_and_offers_a_new_one(make_user, client, mail_server, worker, admin_engine):
    make_user(email="ada@example.com")
    unknown = client.get("/auth/reset/" + "x" * 43)
    assert unknown.status_code == 404 and 'href="/auth/forgot"' in page(unknown)
    assert client.get("/auth/reset/short").status_code == 404
    client.post_form("/auth/forgot", {"email": "ada@example.com"})
    path = link_path(mail_server.wait_for(1)[0], "/auth/reset/")
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE account_tokens SET expires_at = now() - interval '1 second'"))
    expired = client.post_form(path, {"password": NEW_PASSWORD})
    assert expired.status_code == 410
    assert "This link has expired." in page(expired) and "Ask for a new link" in page(expired)
    assert client.login("ada@example.com", PASSWORD).status_code == 302  # nothing changed


def test_forgot_answers_the_same_for_known_and_unknown_addresses(make_user, make_client, mail_server, worker):
    make_user(email="known@example.com")
    known = make_client().post_form("/auth/forgot", {"email": "known@example.com"})
    unknown = make_client().post_form("/auth/forgot", {"email": "unknown@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert without(page(known), "known@example.com") == without(page(unknown), "unknown@example.com")
    assert mail_server.wait_for(1)[0]["To"] == "known@example.com"
    mail_server.assert_quiet(1.0, expected=1)


def test_each_address_gets_a_few_reset_links_an_hour_silently(make_user, client, mail_server, worker):
    make_user(email="ada@example.com")
    answers = [client.post_form("/auth/forgot", {"email": "ada@example.com"}) for _ in range(5)]
    assert {response.status_code for response in answers} == {200}
    assert len({without(page(response)) for response in answers}) == 1
    mail_server.wait_for(3)
    mail_server.assert_quiet(1.0, expected=3)


def test_asking_for_reset_links_is_rate_limited_per_client(app_config, request):
    app_config.update(
        RATELIMIT_ENABLED=True, RATELIMIT_PASSWORD_RESET="2 per minute", RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}"
    )
    make_client = request.getfixturevalue("make_client")
    asker, neighbour = make_client(), make_client()
    asker.environ_base["REMOTE_ADDR"] = unique_address()
    neighbour.environ_base["REMOTE_ADDR"] = unique_address()
    statuses = [asker.post_form("/auth/forgot", {"email": f"x{n}@example.com"}).status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    assert neighbour.post_form("/auth/forgot", {"email": "y@example.com"}).status_code == 200


# --- sign-up without enumeration, and verification ----------------------------------------------


def test_sign_up_answers_the_same_for_a_taken_address_and_mails_its_owner(make_user, make_client, mail_server, worker, admin_engine):
    make_user(email="taken@example.com")
    users_before = count(admin_engine, "SELECT count(*) FROM users")
    responses = {}
    for address in ("taken@example.com", "fresh@example.com"):
        client = make_client()
        posted = client.post_form("/auth/signup", {"name": "Someone", "email": address, "password": PASSWORD})
        responses[address] = (posted.status_code, posted.location, without(page(client.get(posted.location)), address))
    assert responses["taken@example.com"] == responses["fresh@example.com"]
    assert responses["fresh@example.com"][:2] == (303, "/auth/check-inbox")
    assert count(admin_engine, "SELECT count(*) FROM users") == users_before + 1  # only the fresh one

    notice = mail_to(mail_server, "taken@example.com", 2, "Someone tried to sign up for NyxCore with your address")
    text_part = MailServer.text(notice)
    assert f"{PUBLIC_URL}/auth/login" in text_part and f"{PUBLIC_URL}/auth/forgot" in text_part
    assert not re.search(r"/auth/(reset|verify)/", text_part)  # no token for whoever typed the address
    mail_to(mail_server, "fresh@example.com", 2, "Confirm your e-mail address for NyxCore")


def test_the_verification_story(app, make_client, make_user, login_as, mail_server, worker, admin_engine):
    client = make_client()
    client.post_form("/auth/signup", {"name": "Vera Fied", "email": "vera@example.com", "password": PASSWORD})
    path = link_path(mail_to(mail_server, "vera@example.com", 1, "Confirm your e-mail address for NyxCore"), "/auth/verify/")
    ttl = scalar(admin_engine, "SELECT expires_at - created_at FROM account_tokens")
    assert round(ttl.total_seconds() / 3600) == 48

    # Before verifying: logging in works, the banner shows, invitations and GitHub are refused clearly.
    early = make_client()
    assert early.login("vera@example.com").status_code == 302
    overview = page(early.get("/team/"))
    assert "Verify your e-mail address." in overview and "Verify your e-mail address first to invite people." in overview
    for refused in (
        early.post_form("/team/invitations", {"emails": "friend@example.com", "role": "member"}),
        early.get("/team/invitations"),
        early.post_form("/github/connect", {"token": "ghp_" + "a" * 36}),
    ):
        assert refused.status_code == 403
        assert "Verify your e-mail address first" in page(refused) and "Resend the link" in page(refused)
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 0

    # Someone signed in as another account is told so, and nothing changes.
    other = login_as(make_user(email="other@example.com"))
    assert other.post_form(path).status_code == 403
    assert scalar(admin_engine, "SELECT email_verified_at FROM users WHERE email = 'vera@example.com'") is None

    assert client.get(path).status_code == 200  # shows a button, uses nothing
    assert scalar(admin_engine, "SELECT used_at FROM account_tokens") is None
    verified = client.post_form(path)
    assert verified.status_code == 303 and verified.location == "/team/"
    overview = page(client.get("/team/"))  # signed in by the link
    assert "Your address vera@example.com is verified. Welcome, Vera Fied." in overview
    assert "Verify your e-mail address" not in overview and "Invite people" in overview
    assert "Verify your e-mail address" not in page(early.get("/team/"))
    assert early.post_form("/team/invitations", {"emails": "friend@example.com", "role": "member"}).status_code == 200
    assert client.post_form(path).status_code == 410


def test_an_unverified_account_may_ask_for_a_new_link_a_few_times(app_config, request, mail_server, admin_engine):
    app_config.update(
        RATELIMIT_ENABLED=True, RATELIMIT_VERIFY_RESEND="1 per hour", RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}"
    )
    request.getfixturevalue("worker")
    account = request.getfixturevalue("make_user")(email="una@example.com", verified=False)
    client = request.getfixturevalue("login_as")(account)
    resent = client.post_form("/auth/verify/resend")
    assert resent.status_code == 303
    assert "We sent a new link to una@example.com" in page(client.get("/team/"))
    path = link_path(mail_server.wait_for(1)[0], "/auth/verify/")
    assert client.post_form("/auth/verify/resend").status_code == 429  # per account
    assert client.post_form(path).status_code == 303
    assert scalar(admin_engine, "SELECT email_verified_at FROM users") is not None


def test_a_verification_link_proves_the_address_but_does_not_skip_two_factor(
    make_user, make_client, login_as, mail_server, worker, admin_engine
):
    account = make_user(email="tess@example.com", verified=False)
    login_as(account).post_form("/auth/verify/resend")
    path = link_path(mail_server.wait_for(1)[0], "/auth/verify/")
    with admin_engine.begin() as conn:  # two-factor turned on meanwhile (enrolment is tested elsewhere)
        conn.execute(text("UPDATE users SET two_factor_enabled_at = now() WHERE id = :u"), {"u": account.user_id})

    stranger = make_client()  # holds the mailbox, not the phone
    answer = stranger.post_form(path)
    assert answer.status_code == 303 and answer.location.startswith("/auth/login")
    assert "Log in to continue." in page(stranger.get(answer.location))
    assert stranger.get("/team/").status_code == 302  # signed in as nobody
    assert scalar(admin_engine, "SELECT email_verified_at FROM users WHERE id = :u", u=account.user_id) is not None


# --- e-mail change -------------------------------------------------------------------------------


def test_the_email_change_story(make_user, login_as, make_client, mail_server, worker, admin_engine):
    account = make_user(email="old@example.com")
    client = login_as(account)
    wrong = client.post_form("/account/email", {"email": "new@example.com", "password": "not my password"})
    assert wrong.status_code == 400 and "That is not your current password." in page(wrong)
    asked = client.post_form("/account/email", {"email": "New@Example.com", "password": PASSWORD})
    assert asked.status_code == 200 and "We sent a link to new@example.com" in page(asked)

    confirm = mail_to(mail_server, "new@example.com", 2, "Confirm your new NyxCore address")
    notice = mail_to(mail_server, "old@example.com", 2, "A change of your NyxCore address was asked for")
    assert "new[@]example[.]com" in MailServer.text(notice)  # shown, never linked
    assert MailServer.links(notice, PUBLIC_URL + "/account/") == []
    path = link_path(confirm, "/account/email/confirm/")
    make_client().post_form("/auth/forgot", {"email": "old@example.com"})
    reset = link_path(mail_to(mail_server, "old@example.com", 3, "Reset your NyxCore password"), "/auth/reset/")
    assert "Use new@example.com" in page(client.get(path))  # shows, changes nothing
    assert scalar(admin_engine, "SELECT email FROM users") == "old@example.com"
    assert client.post_form(path).status_code == 303
    assert dicts(admin_engine, "SELECT email, email_verified_at IS NOT NULL AS verified FROM users") == [
        {"email": "new@example.com", "verified": True}
    ]
    assert make_client().login("old@example.com").status_code == 400
    assert make_client().login("new@example.com").status_code == 302
    assert client.post_form(path).status_code == 410
    assert make_client().get(reset).status_code == 410  # a link mailed to the old address stops working


def test_a_taken_address_gets_the_same_answer_and_its_owner_no_link(make_user, login_as, mail_server, worker):
    make_user(email="taken@example.com")
    client = login_as(make_user(email="me@example.com"))
    taken = client.post_form("/account/email", {"email": "taken@example.com", "password": PASSWORD})
    free = client.post_form("/account/email", {"email": "free@example.com", "password": PASSWORD})
    assert taken.status_code == free.status_code == 200
    assert without(page(taken), "taken@example.com") == without(page(free), "free@example.com")
    told = mail_to(mail_server, "taken@example.com", 4, "Someone tried to use this address")
    assert not re.search(r"/account/email/confirm/", MailServer.text(told))
    mail_to(mail_server, "free@example.com", 4, "Confirm your new NyxCore address")


def test_an_address_taken_before_the_confirmation_changes_nothing(make_user, login_as, mail_server, worker, admin_engine):
    account = make_user(email="me@example.com")
    client = login_as(account)
    client.post_form("/account/email", {"email": "contested@example.com", "password": PASSWORD})
    path = link_path(mail_to(mail_server, "contested@example.com", 2, "Confirm your new NyxCore address"), "/account/email/confirm/")
    make_user(email="contested@example.com")
    refused = client.post_form(path)
    assert refused.status_code == 409
    assert "contested@example.com is now used by another account, so your address was not changed." in page(refused)
    assert scalar(admin_engine, "SELECT email FROM users WHERE id = :u", u=account.user_id) == "me@example.com"
    assert scalar(admin_engine, "SELECT used_at FROM account_tokens WHERE purpose = 'change_email'") is None
