"""Two-factor authentication: enrolment, the log-in code step, recovery codes, a team's requirement,
key rotation, against PostgreSQL with the app role."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import insert, text

from nyxcore import authz, tenancy
from nyxcore.crypto import KeyRing, Sealed, generate_key_setting
from nyxcore.extensions import db
from nyxcore.models import User, UserTwoFactor
from nyxcore.roles import TenantRole
from nyxcore.services import two_factor as two_factor_service
from tests.conftest import PASSWORD
from tests.helpers import count, role_of, rows, scalar, statements_for

SECRET = re.compile(r'id="two-factor-secret"[^>]*>([A-Z2-7]+)<')
CODE = re.compile(r"<li><code>([a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5})</code></li>")
O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


@dataclass
class Clock:
    """The service's clock, moved by the test: one TOTP time step is 30 seconds."""

    now: datetime

    def code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.now)

    def next_step(self) -> None:
        self.now += timedelta(seconds=30)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock(datetime.now(UTC))
    monkeypatch.setattr(two_factor_service, "_now", lambda: moved.now)
    return moved


def start_setup(client: Any) -> Any:
    """The password again, then the set-up page it leads to."""
    started = client.post_form("/account/two-factor/setup", {"password": PASSWORD})
    assert started.status_code == 302 and started.location == "/account/two-factor/setup", started.status_code
    return client.get(started.location)


def enrol(client: Any, clock: Clock) -> tuple[str, list[str]]:
    """Turn two-factor on for the client's user: the secret and the recovery codes."""
    page = start_setup(client)
    assert page.status_code == 200, page.get_data(as_text=True)
    secret = SECRET.search(page.get_data(as_text=True)).group(1)
    done = client.post_form("/account/two-factor/confirm", {"code": clock.code(secret)})
    assert done.status_code == 200, done.get_data(as_text=True)
    clock.next_step()
    return secret, CODE.findall(done.get_data(as_text=True))


def enrolled(make_client: Any, account: Any, clock: Clock) -> tuple[str, list[str]]:
    """Two-factor turned on for `account` from a browser of its own: the secret and the recovery codes."""
    browser = make_client()
    browser.login(account.email)
    return enrol(browser, clock)


def log_in_with_code(client: Any, email: str, code: str, next_url: str | None = None) -> Any:
    query = f"?next={next_url}" if next_url else ""
    step = client.post_form(f"/auth/login{query}", {"email": email, "password": PASSWORD})
    assert step.status_code == 302 and step.location.startswith("/auth/two-factor"), step.location
    return client.post_form(step.location, {"code": code})


# --- enrolment ---------------------------------------------------------------------------------------


def test_enrolment_asks_for_the_password_first(client, make_user):
    account = make_user()
    client.login(account.email)
    wrong = client.post_form("/account/two-factor/setup", {"password": "not my password at all"})
    assert wrong.status_code == 400
    assert "That is not your current password." in wrong.get_data(as_text=True)
    assert SECRET.search(wrong.get_data(as_text=True)) is None
    assert client.post_form("/account/two-factor/setup", {}).status_code == 400
    assert client.get("/account/two-factor/setup").location == "/account/two-factor"  # nothing started


def test_the_set_up_shows_a_server_made_qr_code_and_the_secret_and_is_not_active_yet(client, make_client, make_user):
    account = make_user()
    client.login(account.email)
    page = start_setup(client)
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    main = body.split("<main", 1)[1]  # the header's logo is an <img>; the QR code is not
    assert "<svg" in main and "<img" not in main and "<script" not in body
    secret = SECRET.search(body).group(1)
    assert len(secret) == 32
    other = make_client()
    assert other.login(account.email).location == "/team/"  # unconfirmed: the password alone still logs in


def test_a_wrong_code_is_refused_and_a_right_one_turns_it_on_with_ten_codes_shown_once(client, make_user, clock):
    account = make_user()
    client.login(account.email)
    secret = SECRET.search(start_setup(client).get_data(as_text=True)).group(1)
    wrong_code = f"{(int(clock.code(secret)) + 1) % 1_000_000:06d}"
    refused = client.post_form("/account/two-factor/confirm", {"code": wrong_code})
    assert refused.status_code == 400
    assert "That code is not valid" in refused.get_data(as_text=True)
    assert secret in refused.get_data(as_text=True)  # the set-up is shown again to retry
    assert "On since" not in client.get("/account/two-factor").get_data(as_text=True)

    done = client.post_form("/account/two-factor/confirm", {"code": clock.code(secret)})
    codes = CODE.findall(done.get_data(as_text=True))
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    assert len(codes) == 10 and len(set(codes)) == 10
    settings = client.get("/account/two-factor").get_data(as_text=True)
    assert "On since" in settings and "<strong>10</strong> unused recovery codes" in settings
    assert not any(code in settings for code in codes)
    again = client.post_form("/account/two-factor/confirm", {"code": clock.code(secret)})
    assert again.status_code == 302  # nothing waits for a code any more: the codes are not shown again


def test_codes_are_stored_as_sha256_and_the_secret_sealed(make_client, make_user, clock, admin_engine):
    account = make_user()
    client = make_client()
    client.login(account.email)
    secret, codes = enrol(client, clock)
    stored = {row.code_hash for row in rows(admin_engine, "SELECT code_hash FROM recovery_codes")}
    assert stored == {hashlib.sha256(code.replace("-", "").encode()).hexdigest() for code in codes}
    row = rows(admin_engine, "SELECT * FROM user_two_factor")[0]
    assert secret.encode() not in bytes(row.ciphertext) and row.enabled_at is not None
    assert scalar(admin_engine, "SELECT two_factor_enabled_at FROM users WHERE id = :u", u=account.user_id)


def test_turning_it_on_and_off_ends_the_other_sessions(make_client, make_user, clock):
    account = make_user()
    client, elsewhere = make_client(), make_client()
    client.login(account.email)
    elsewhere.login(account.email)
    secret, _ = enrol(client, clock)
    assert client.get("/team/").status_code == 200
    assert elsewhere.get("/team/").location.startswith("/auth/login")

    elsewhere = make_client()
    assert log_in_with_code(elsewhere, account.email, clock.code(secret)).status_code == 302
    refused = client.post_form("/account/two-factor/disable", {"disable-password": "wrong password here"})
    assert refused.status_code == 400 and "On since" in client.get("/account/two-factor").get_data(as_text=True)
    off = client.post_form("/account/two-factor/disable", {"disable-password": PASSWORD})
    assert off.status_code == 302
    assert elsewhere.get("/team/").location.startswith("/auth/login")
    assert make_client().login(account.email).location == "/team/"  # the password alone again


# --- log in --------------------------------------------------------------------------------------------


def test_log_in_with_a_code_starts_the_session_only_after_the_code(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    client = make_client()
    step = client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    assert step.location == "/auth/two-factor"
    assert client.get("/team/").location.startswith("/auth/login")  # no session yet
    assert client.get("/auth/two-factor").status_code == 200
    done = client.post_form("/auth/two-factor", {"code": clock.code(secret)})
    assert done.status_code == 302 and done.location == "/team/"
    assert client.get("/team/").status_code == 200
    with client.session_transaction() as session:
        assert "two_factor_login" not in session


def test_the_same_code_is_refused_twice(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    code = clock.code(secret)
    assert log_in_with_code(make_client(), account.email, code).status_code == 302
    replay = log_in_with_code(make_client(), account.email, code)
    assert replay.status_code == 400 and "That code is not valid" in replay.get_data(as_text=True)
    clock.next_step()
    assert log_in_with_code(make_client(), account.email, clock.code(secret)).status_code == 302


def test_an_earlier_step_is_refused_after_a_later_one_was_used(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    earlier = clock.code(secret)
    clock.next_step()
    assert log_in_with_code(make_client(), account.email, clock.code(secret)).status_code == 302
    assert log_in_with_code(make_client(), account.email, earlier).status_code == 400  # still in the window


def test_a_recovery_code_logs_in_once(make_client, make_user, clock):
    account = make_user()
    _, codes = enrolled(make_client, account, clock)
    client = make_client()
    assert log_in_with_code(client, account.email, codes[3].upper().replace("-", " ")).location == "/team/"
    assert "<strong>9</strong> unused recovery codes" in client.get("/account/two-factor").get_data(as_text=True)
    second = log_in_with_code(make_client(), account.email, codes[3])
    assert second.status_code == 400


def test_five_wrong_codes_end_the_pending_log_in(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    client = make_client()
    client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    for _ in range(4):
        assert client.post_form("/auth/two-factor", {"code": "000000-nope"}).status_code == 400
    fifth = client.post_form("/auth/two-factor", {"code": "not-a-code"})
    assert fifth.status_code == 302 and fifth.location.startswith("/auth/login")
    late = client.post_form("/auth/two-factor", {"code": clock.code(secret)})
    assert late.location.startswith("/auth/login") and client.get("/team/").status_code == 302
    # A new log in gains nothing either: the count is kept in the database, per account.
    again = log_in_with_code(make_client(), account.email, clock.code(secret))
    assert again.status_code == 302 and again.location.startswith("/auth/login")


def test_wrong_codes_count_per_account_for_the_lockout_not_per_log_in(make_client, make_user, clock, admin_engine):
    """A known password must not buy five more guesses per log in: the count outlives the log in."""
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    for wrong in (2, 3):  # two log ins, five wrong codes between them
        client = make_client()
        client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
        for _ in range(wrong):
            assert client.post_form("/auth/two-factor", {"code": "000000"}).status_code in (302, 400)
    refused = log_in_with_code(make_client(), account.email, clock.code(secret))
    assert refused.status_code == 302 and refused.location.startswith("/auth/login")
    with admin_engine.begin() as conn:  # the lockout's fifteen minutes pass
        conn.execute(
            text("UPDATE user_two_factor SET last_failed_at = now() - interval '16 minutes' WHERE user_id = :u"),
            {"u": account.user_id},
        )
    assert log_in_with_code(make_client(), account.email, clock.code(secret)).location == "/team/"


def test_nothing_but_the_code_step_signs_in_a_user_with_two_factor(app, make_user, admin_engine):
    """authz.sign_in refuses such a user unless the code was proved: a new way in that forgets the
    second factor fails loudly instead of letting the password (or a link) alone through."""
    account = make_user()
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE users SET two_factor_enabled_at = now() WHERE id = :u"), {"u": account.user_id})
    with app.test_request_context("/"), authz.acting_as(account.user_id):
        user = db.session.get(User, account.user_id)
        with pytest.raises(RuntimeError, match="code step"):
            authz.sign_in(user)
        authz.sign_in(user, second_factor_proved=True)


def test_the_count_survives_a_replayed_marker(make_client, make_user, clock):
    account = make_user()
    enrolled(make_client, account, clock)
    client = make_client()
    client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    with client.session_transaction() as session:
        saved = dict(session)
    for _ in range(4):
        client.post_form("/auth/two-factor", {"code": "111111"})
    with client.session_transaction() as session:
        session.update(saved)  # the marker as it was before the wrong codes
    assert client.post_form("/auth/two-factor", {"code": "111111"}).location.startswith("/auth/login")


def test_the_pending_log_in_expires_after_five_minutes(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    client = make_client()
    client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    with client.session_transaction() as session:
        marker = dict(session["two_factor_login"])
        session["two_factor_login"] = {**marker, "at": marker["at"] - 301}
    late = client.post_form("/auth/two-factor", {"code": clock.code(secret)})
    assert late.status_code == 302 and late.location.startswith("/auth/login")
    assert client.get("/team/").status_code == 302
    assert make_client().get("/auth/two-factor").location.startswith("/auth/login")


def test_a_safe_next_is_followed_and_another_site_is_not(make_client, make_user, clock):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    assert log_in_with_code(make_client(), account.email, clock.code(secret), "/notes/").location == "/notes/"
    clock.next_step()
    away = log_in_with_code(make_client(), account.email, clock.code(secret), "https://evil.example/")
    assert away.location == "/team/"


def test_codes_are_rate_limited_per_client(app_config, request, clock):
    app_config.update(RATELIMIT_ENABLED=True, RATELIMIT_TWO_FACTOR="3 per minute", RATELIMIT_LOGIN="1000 per minute")
    make_client, make_user = request.getfixturevalue("make_client"), request.getfixturevalue("make_user")
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    client, neighbour = make_client(), make_client()
    client.environ_base["REMOTE_ADDR"] = f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    neighbour.environ_base["REMOTE_ADDR"] = f"10.78.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    client.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    statuses = [client.post_form("/auth/two-factor", {"code": "123456"}).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    assert log_in_with_code(neighbour, account.email, clock.code(secret)).status_code == 302


# --- the team's requirement -------------------------------------------------------------------------


def test_only_an_owner_with_two_factor_can_require_it(team, as_owner, as_admin, clock):
    assert as_admin.post_form("/team/two-factor", {"require": "y"}).status_code == 403
    assert "Require two-factor" not in as_admin.get("/team/").get_data(as_text=True)
    refused = as_owner.post_form("/team/two-factor", {"require": "y"})
    assert refused.status_code == 409 and "Turn on two-factor authentication for your own account first" in refused.get_data(as_text=True)
    enrol(as_owner, clock)
    settings = as_owner.get("/team/settings").get_data(as_text=True)
    assert "Require two-factor authentication" in settings and 'value="y" checked' not in settings
    assert as_owner.post_form("/team/two-factor", {"require": "y"}).location == "/team/settings"
    assert 'value="y" checked' in as_owner.get("/team/settings").get_data(as_text=True)
    assert "required two-factor authentication of every member." in as_owner.get("/team/audit").get_data(as_text=True)


def test_a_required_team_sends_a_member_without_it_to_enrol_first(team, as_owner, as_member, clock):
    enrol(as_owner, clock)
    as_owner.post_form("/team/two-factor", {"require": "y"})
    for path in ("/team/", "/notes/", "/wardrobe/", "/"):
        response = as_member.get(path, follow_redirects=False)
        while response.status_code == 302 and response.location not in ("/account/two-factor",):
            response = as_member.get(response.location)
        assert response.location == "/account/two-factor", path
    page = as_member.get("/account/two-factor").get_data(as_text=True)
    assert "requires two-factor authentication. Turn it on to continue." in page
    assert 'href="/team/leave"' in page  # a team may require it, not hold the member hostage
    assert as_member.post_form("/teams/switch", {"tenant_id": str(team.accounts[M].team_id)}).status_code == 302
    assert as_member.get("/team/").status_code == 200  # their own team does not require it
    as_member.post_form("/teams/switch", {"tenant_id": str(team.id)})
    enrol(as_member, clock)
    assert as_member.get("/team/").status_code == 200
    assert as_member.post_form("/auth/logout").status_code == 302


def test_a_member_without_it_may_still_leave_a_team_that_requires_it(team, as_owner, as_viewer, clock, admin_engine):
    enrol(as_owner, clock)
    as_owner.post_form("/team/two-factor", {"require": "y"})
    assert as_viewer.get("/team/").location == "/account/two-factor"
    left = as_viewer.confirm("/team/leave")
    assert left.status_code == 303 and left.location != "/account/two-factor"
    assert role_of(admin_engine, team.id, team.accounts[V].user_id) is None


def test_admins_see_who_has_not_turned_it_on_and_members_do_not(team, as_owner, as_admin, as_member, clock):
    enrol(as_owner, clock)
    page = as_admin.get("/team/").get_data(as_text=True)
    assert '<th scope="col">Two-factor</th>' in page
    assert page.count('<span class="badge ok">On</span>') == 1 and page.count('<span class="badge warn">Off</span>') == 3
    assert "Two-factor</th>" not in as_member.get("/team/").get_data(as_text=True)


def test_the_requirement_costs_the_team_page_no_statement(app, team, as_owner, clock):
    enrol(as_owner, clock)
    as_owner.get("/team/")  # a first visit may write last_seen_at
    before = statements_for(app, as_owner, "/team/")
    as_owner.post_form("/team/two-factor", {"require": "y"})
    as_owner.get("/team/")
    assert statements_for(app, as_owner, "/team/") == before



# --- regenerate, secrecy, rotation ----------------------------------------------------------------------


def test_new_recovery_codes_need_the_password_and_void_the_old_ones(make_client, make_user, clock):
    account = make_user()
    client = make_client()
    client.login(account.email)
    _, old = enrol(client, clock)
    assert client.post_form("/account/two-factor/recovery-codes", {"codes-password": "wrong password!"}).status_code == 400
    fresh = client.post_form("/account/two-factor/recovery-codes", {"codes-password": PASSWORD})
    new = CODE.findall(fresh.get_data(as_text=True))
    assert fresh.status_code == 200 and len(new) == 10 and not set(new) & set(old)
    assert log_in_with_code(make_client(), account.email, old[0]).status_code == 400
    assert log_in_with_code(make_client(), account.email, new[0]).status_code == 302


def test_the_secret_appears_only_on_the_set_up_page_and_never_in_logs(make_client, make_user, clock, caplog):
    caplog.set_level(logging.DEBUG)
    account = make_user()
    client = make_client()
    client.login(account.email)
    secret, codes = enrol(client, clock)
    pages = [client.get(path).get_data(as_text=True) for path in ("/account/two-factor", "/team/", "/team/settings")]
    fresh = make_client()
    fresh.post_form("/auth/login", {"email": account.email, "password": PASSWORD})
    pages.append(fresh.get("/auth/two-factor").get_data(as_text=True))
    pages.append(fresh.post_form("/auth/two-factor", {"code": "654321"}).get_data(as_text=True))
    assert fresh.post_form("/auth/two-factor", {"code": clock.code(secret)}).status_code == 302
    for text_seen in [*pages, caplog.text]:
        assert secret not in text_seen and secret.lower() not in text_seen
        assert not any(code in text_seen for code in codes)


def test_key_rotation_re_seals_the_two_factor_secrets(request, app_config, admin_engine):
    old_setting, new_setting = generate_key_setting("old"), generate_key_setting("new")
    old, new_only = KeyRing.parse(old_setting), KeyRing.parse(new_setting)
    app_config["NYXCORE_ENCRYPTION_KEYS"] = f"{new_setting},{old_setting}"
    make_user = request.getfixturevalue("make_user")
    accounts = [make_user() for _ in range(3)]
    secrets_by_user = {account.user_id: pyotp.random_base32() for account in accounts}
    with admin_engine.begin() as conn:
        for user_id, secret in secrets_by_user.items():
            sealed = old.encrypt(secret.encode(), f"two-factor-secret:{user_id}")
            conn.execute(
                insert(UserTwoFactor.__table__).values(
                    id=uuid.uuid4(), user_id=user_id, key_id=sealed.key_id, nonce=sealed.nonce,
                    ciphertext=sealed.ciphertext, enabled_at=datetime.now(UTC),
                )
            )
    runner = request.getfixturevalue("app").test_cli_runner()
    result = runner.invoke(args=["nyxcore", "keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 3 two-factor secrets." in result.stdout
    stored = rows(admin_engine, "SELECT user_id, key_id, nonce, ciphertext FROM user_two_factor")
    assert {row.key_id for row in stored} == {"new"}
    for row in stored:
        sealed = Sealed(row.key_id, bytes(row.nonce), bytes(row.ciphertext))
        assert new_only.decrypt(sealed, f"two-factor-secret:{row.user_id}").decode() == secrets_by_user[row.user_id]
    again = runner.invoke(args=["nyxcore", "keys", "rotate"])
    assert "Re-encrypted 0 two-factor secrets." in again.stdout
    assert count(admin_engine, "SELECT count(*) FROM user_two_factor WHERE key_id = 'new'") == 3



def test_of_two_concurrent_uses_of_one_code_exactly_one_wins(app, make_user, make_client, clock, admin_engine, monkeypatch):
    account = make_user()
    secret, _ = enrolled(make_client, account, clock)
    code = clock.code(secret)
    both_checked = threading.Barrier(2, timeout=2)
    matching_step = two_factor_service._matching_step

    def checked_then_wait(*args: Any) -> int | None:
        step = matching_step(*args)
        # Both requests read the row and found the code right, unless the attempt each takes first
        # (a row lock) makes the second wait for the first to commit: the barrier then breaks.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()
        return step

    monkeypatch.setattr(two_factor_service, "_matching_step", checked_then_wait)
    outcomes: list[two_factor_service.LoginCheck] = []

    def log_in() -> None:
        with app.app_context(), tenancy.tenant_context(user_id=account.user_id):
            user = two_factor_service.user_for_login(account.user_id)
            outcomes.append(two_factor_service.check_login_code(user, code))
            db.session.commit()

    threads = [threading.Thread(target=log_in) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(o.value for o in outcomes) == ["accepted", "wrong"]
