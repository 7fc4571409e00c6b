"""Attacks on the account features (a review): each test is a hole that was found, then closed."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.services import account_tokens
from nyxcore.services import two_factor as two_factor_service
from nyxcore.services.account_tokens import Purpose
from nyxcore.services.mail_transports import ConsoleTransport
from tests.conftest import PASSWORD, sign_in
from tests.helpers import count, scalar
from tests.integration.test_account_recovery import unique_address
from tests.integration.test_two_factor import clock, enrolled, start_setup

__all__ = ["clock"]  # the fixture, shared with test_two_factor.py
NEW_PASSWORD = "a brand new passphrase"

# Six digits to str.isdigit(), none of them ASCII: Arabic-Indic, superscript, full-width.
NON_ASCII_DIGITS = ("\u0661\u0662\u0663\u0664\u0665\u0666", "\u00b9\u00b2\u00b3\u2074\u2075\u2076", "\uff11" * 6)


def test_a_code_of_non_ascii_digits_is_a_wrong_code_not_a_500(make_client, make_user, clock):
    account = make_user()
    enrolled(make_client, account, clock)
    browser = make_client()
    step = browser.login(account.email)
    assert step.location.startswith("/auth/two-factor")
    for code in NON_ASCII_DIGITS:
        refused = browser.post_form(step.location, {"code": code})
        assert refused.status_code == 400, (code, refused.status_code)
        assert "That code is not valid" in refused.get_data(as_text=True)


def test_a_set_up_code_of_non_ascii_digits_is_a_form_error_not_a_500(make_client, make_user, clock):
    account = make_user()
    browser = make_client()
    browser.login(account.email)
    start_setup(browser)
    for code in NON_ASCII_DIGITS:
        refused = browser.post_form("/account/two-factor/confirm", {"code": code})
        assert refused.status_code == 400, (code, refused.status_code)
        assert "That code is not valid" in refused.get_data(as_text=True)


# --- links that outlive a password reset or change ------------------------------------------------


def _issue(app: Any, account: Any, purpose: Purpose, *, new_email: str | None = None) -> str:
    """A raw account link for `account`, as the mail would carry it (issued as that user, committed)."""
    with app.app_context(), tenancy.tenant_context(user_id=account.user_id):
        token = account_tokens.issue(account.user_id, purpose, timedelta(hours=1), new_email=new_email)
        db.session.commit()
    return token


def test_a_password_reset_voids_a_pending_email_change_and_verification_link(app, make_user, make_client, admin_engine):
    # Someone who knew the password asked to move the account to their address; the owner, told by
    # the notice mail, resets the password. The link at the intruder's address must die with it.
    account = make_user(email="victim@example.com", verified=False)
    change = _issue(app, account, Purpose.CHANGE_EMAIL, new_email="intruder@example.com")
    verify = _issue(app, account, Purpose.VERIFY_EMAIL)
    reset = _issue(app, account, Purpose.RESET_PASSWORD)
    owner = make_client()
    assert owner.post_form(f"/auth/reset/{reset}", {"password": NEW_PASSWORD}).status_code == 303

    intruder = make_client()
    assert intruder.post_form(f"/account/email/confirm/{change}").status_code == 410
    assert scalar(admin_engine, "SELECT email FROM users") == "victim@example.com"
    # The verification link signs in whoever holds it: after a reset it must not.
    assert intruder.post_form(f"/auth/verify/{verify}").status_code == 410
    assert intruder.get("/account").status_code == 302


def test_a_password_change_voids_pending_account_links(app, make_user, login_as, make_client, admin_engine):
    account = make_user(email="victim@example.com", verified=False)
    change = _issue(app, account, Purpose.CHANGE_EMAIL, new_email="intruder@example.com")
    reset = _issue(app, account, Purpose.RESET_PASSWORD)
    verify = _issue(app, account, Purpose.VERIFY_EMAIL)
    owner = login_as(account)
    changed = owner.post_form(
        "/account/password",
        {"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert changed.status_code == 302

    intruder = make_client()
    assert intruder.post_form(f"/account/email/confirm/{change}").status_code == 410
    assert scalar(admin_engine, "SELECT email FROM users") == "victim@example.com"
    assert intruder.post_form(f"/auth/reset/{reset}", {"password": "the intruder's own"}).status_code == 410
    assert intruder.post_form(f"/auth/verify/{verify}").status_code == 410  # it would sign them in
    assert intruder.get("/account").status_code == 302
    assert make_client().login("victim@example.com", NEW_PASSWORD).status_code == 302


# --- the count of wrong codes under concurrency --------------------------------------------------


def test_concurrent_wrong_codes_cannot_try_more_than_the_limit(app, make_user, make_client, clock, admin_engine, monkeypatch):
    # Each request read the count, then checked the code, then added one: requests sent together all
    # read the same count, so a client holding a password could try more codes than MAX_FAILED_ATTEMPTS.
    account = make_user()
    enrolled(make_client, account, clock)
    tries = two_factor_service.MAX_FAILED_ATTEMPTS + 3
    together = threading.Barrier(tries, timeout=2)
    checked: list[str] = []
    use_recovery_code = two_factor_service._use_recovery_code

    def check_then_wait(user_id: Any, code: str) -> bool:
        checked.append(code)
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()  # every request has got this far before any adds its failure
        return use_recovery_code(user_id, code)

    monkeypatch.setattr(two_factor_service, "_use_recovery_code", check_then_wait)

    def guess(n: int) -> None:
        with app.app_context(), tenancy.tenant_context(user_id=account.user_id):
            user = two_factor_service.user_for_login(account.user_id)
            two_factor_service.check_login_code(user, f"guess-{n:02d}-wrong")
            db.session.commit()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(checked) == two_factor_service.MAX_FAILED_ATTEMPTS, checked
    assert scalar(admin_engine, "SELECT failed_attempts FROM user_two_factor") == two_factor_service.MAX_FAILED_ATTEMPTS


# --- a browser that signs in as someone else ------------------------------------------------------


def _live_sessions(admin_engine: Any, account: Any) -> int:
    return count(admin_engine, "SELECT count(*) FROM user_sessions WHERE user_id = :u AND revoked_at IS NULL", u=account.user_id)


def test_logging_in_as_another_account_ends_this_browsers_session(make_user, login_as, make_client, admin_engine, clock):
    # The browser forgets the first account's cookie; its session must not stay live (listed on the
    # account page, usable by a copy of the cookie) until it idles out a month later.
    first, second, guarded = make_user(), make_user(), make_user()
    enrolled(make_client, guarded, clock)
    browser = login_as(first)
    saved = browser.get_cookie("session").value
    assert browser.login(second.email).status_code == 302
    assert _live_sessions(admin_engine, first) == 0
    replay = make_client()
    replay.set_cookie("session", saved)
    assert replay.get("/account").status_code == 302

    browser = login_as(first)
    assert browser.login(guarded.email).location.startswith("/auth/two-factor")  # the password, then a code
    assert _live_sessions(admin_engine, first) == 0

    browser = login_as(first)  # a reset link used here signs this browser out: its session ends too
    reset = _issue(browser.application, second, Purpose.RESET_PASSWORD)
    assert browser.post_form(f"/auth/reset/{reset}", {"password": NEW_PASSWORD}).status_code == 303
    assert _live_sessions(admin_engine, first) == 0


def test_an_address_proved_by_an_invitation_voids_its_verification_links(app, as_owner, make_user, login_as, make_client):
    # Accepting an invitation proves the address; the sign-up's verification link, still unused,
    # kept signing its holder in for the rest of its 48 hours.
    una = make_user(email="una@example.com", verified=False)
    verify = _issue(app, una, Purpose.VERIFY_EMAIL)
    ConsoleTransport.recent.clear()
    assert as_owner.post_form("/team/invitations", {"emails": una.email, "role": "member"}).status_code == 200
    path = re.search(r"http://nyxcore\.test(/invite/[A-Za-z0-9_-]+)", ConsoleTransport.recent[0]["text"]).group(1)
    assert login_as(una).post_form(path).location == "/team/"
    visitor = make_client()
    assert visitor.post_form(f"/auth/verify/{verify}").status_code == 410
    assert visitor.get("/account").status_code == 302


# --- notices that anyone can make us send ---------------------------------------------------------


def test_sign_up_notices_to_a_taken_address_are_limited_per_address_silently(app_config, request, admin_engine):
    # Signing up with a taken address mails its owner; the per-client limit alone let anyone with a
    # few addresses bomb one inbox from the operator's sender. Over the allowance the answer is the
    # same (no enumeration) and no mail is written.
    app_config.update(
        RATELIMIT_ENABLED=True, RATELIMIT_SIGNUP="1000 per hour", RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}"
    )
    make_user, make_client = request.getfixturevalue("make_user"), request.getfixturevalue("make_client")
    app = request.getfixturevalue("app")
    make_user(email="taken@example.com")
    allowance = app.config["ACCOUNT_NOTICES_PER_ADDRESS_PER_DAY"]
    for _ in range(allowance + 3):
        posted = make_client().post_form(
            "/auth/signup", {"name": "Someone", "email": "taken@example.com", "password": PASSWORD}
        )
        assert (posted.status_code, posted.location) == (303, "/auth/check-inbox")
    sent = count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE to_address = 'taken@example.com'")
    assert sent == allowance


def test_taken_address_notices_from_email_changes_are_limited_per_address_silently(app_config, request, admin_engine):
    app_config.update(
        RATELIMIT_ENABLED=True, RATELIMIT_EMAIL_CHANGE="1000 per hour", RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}"
    )
    make_user, login_as = request.getfixturevalue("make_user"), request.getfixturevalue("login_as")
    app = request.getfixturevalue("app")
    make_user(email="taken@example.com")
    asker = login_as(make_user())
    allowance = app.config["ACCOUNT_NOTICES_PER_ADDRESS_PER_DAY"]
    for _ in range(allowance + 3):
        asked = asker.post_form("/account/email", {"email": "taken@example.com", "password": PASSWORD})
        assert asked.status_code == 200
    sent = count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE to_address = 'taken@example.com'")
    assert sent == allowance


# --- password checks behind a session -------------------------------------------------------------


def test_the_two_factor_forms_that_check_a_password_are_rate_limited_like_log_in(app_config, request, clock):
    # Turning two-factor on or off and new recovery codes each ask for the password again: with no
    # limit, a stolen session made them a password-guessing oracle (the account forms had one).
    app_config.update(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3 per minute", RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}")
    make_user, make_client = request.getfixturevalue("make_user"), request.getfixturevalue("make_client")
    plain, enrolled_account = make_user(), make_user()
    enrolled(make_client, enrolled_account, clock)  # its own password posts, from 127.0.0.1

    def browser_of(account: Any) -> Any:
        browser = make_client()
        browser.environ_base["REMOTE_ADDR"] = unique_address()
        sign_in(browser, account.user_id)
        return browser

    browser = browser_of(plain)
    setups = [browser.post_form("/account/two-factor/setup", {"password": f"guess {i}"}).status_code for i in range(4)]
    assert setups == [400, 400, 400, 429]
    forms = (("/account/two-factor/recovery-codes", "codes-password"), ("/account/two-factor/disable", "disable-password"))
    for form, field in forms:
        browser = browser_of(enrolled_account)
        statuses = [browser.post_form(form, {field: f"guess {i}"}).status_code for i in range(4)]
        assert statuses == [400, 400, 400, 429], form


# --- the address as typed ---------------------------------------------------------------------------


def test_an_address_typed_with_its_ascii_domain_logs_in_and_gets_a_reset_link(make_user, make_client, admin_engine):
    # Sign-up stores an address as email_validator normalises it (an internationalised domain in
    # Unicode); log in and reset only lower-cased what was typed, so whoever signed up with the
    # xn-- form of their domain could never log in, nor reset, with it.
    account = make_user(email="Ana@XN--E1AFMKFD.XN--P1AI")
    assert account.email == "ana@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444"
    assert make_client().login("ana@xn--e1afmkfd.xn--p1ai").status_code == 302
    assert make_client().login(account.email).status_code == 302
    assert make_client().post_form("/auth/forgot", {"email": "ANA@xn--e1afmkfd.xn--p1ai"}).status_code == 200
    assert count(admin_engine, "SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'") == 1
