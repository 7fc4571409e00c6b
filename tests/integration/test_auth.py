"""Sign up, log in, log out, against PostgreSQL with the app role."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.conftest import PASSWORD
from tests.helpers import count, scalar


def test_signup_creates_an_unverified_user_and_personal_team_and_sends_to_check_the_inbox(client, admin_engine):
    response = client.post_form(
        "/auth/signup", {"name": "Ada Lovelace", "email": "Ada@Example.COM", "password": PASSWORD}
    )
    assert response.status_code == 303
    assert response.location == "/auth/check-inbox"
    page = client.get("/auth/check-inbox").get_data(as_text=True)
    assert "We sent a link to <strong>ada@example.com</strong> to finish signing up." in page
    assert client.get("/team/").status_code == 302  # not signed in: the link does that
    assert scalar(admin_engine, "SELECT email_verified_at FROM users WHERE email = 'ada@example.com'") is None
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE role = 'owner'") == 1
    assert count(admin_engine, "SELECT count(*) FROM account_tokens WHERE purpose = 'verify_email'") == 1
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE tenant_id IS NULL") == 1


def test_logging_in_before_verifying_works_and_shows_the_banner(client, admin_engine):
    client.post_form("/auth/signup", {"name": "Ada Lovelace", "email": "ada@example.com", "password": PASSWORD})
    assert client.login("ada@example.com").status_code == 302
    page = client.get("/team/").get_data(as_text=True)
    assert "Ada&#39;s team" in page
    assert "Verify your e-mail address." in page and "Resend the link" in page


def test_password_is_stored_as_argon2id_at_owasp_minimum(client, admin_engine):
    client.post_form("/auth/signup", {"name": "Ada", "email": "ada@example.com", "password": PASSWORD})
    stored = scalar(admin_engine, "SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


def test_a_taken_address_in_other_letter_case_creates_nothing(client, make_user, admin_engine):
    make_user(email="grace@example.com")
    response = client.post_form(
        "/auth/signup", {"name": "Grace Again", "email": "GRACE@example.com", "password": PASSWORD}
    )
    assert response.status_code == 303
    assert response.location == "/auth/check-inbox"
    assert count(admin_engine, "SELECT count(*) FROM users") == 1
    assert count(admin_engine, "SELECT count(*) FROM tenants") == 1
    assert count(admin_engine, "SELECT count(*) FROM account_tokens") == 0


def test_short_password_and_bad_email_are_form_errors(client, admin_engine):
    response = client.post_form("/auth/signup", {"name": "X", "email": "not-an-email", "password": "short"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Use at least 12 characters." in body
    assert "Invalid email address." in body
    assert count(admin_engine, "SELECT count(*) FROM users") == 0


def test_login_and_logout(client, make_user):
    account = make_user()
    response = client.login(account.email)
    assert response.status_code == 302
    assert client.get("/team/").status_code == 200
    assert client.post_form("/auth/logout").status_code == 302
    after = client.get("/team/")
    assert after.status_code == 302
    assert after.location.startswith("/auth/login")


def test_login_accepts_email_in_any_case(client, make_user):
    account = make_user(email="mixed@example.com")
    assert client.login("MiXeD@Example.com").status_code == 302
    assert account.email == "mixed@example.com"


def test_wrong_password_and_unknown_email_give_the_same_error(client, make_user):
    account = make_user()
    wrong = client.login(account.email, "not the password at all")
    unknown = client.login("nobody@example.com", "not the password at all")
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert "Invalid email or password." in response.get_data(as_text=True)
    assert client.get("/team/").status_code == 302


def test_post_without_csrf_token_is_refused_and_changes_nothing(client, admin_engine):
    response = client.post(
        "/auth/signup", data={"name": "Eve", "email": "eve@example.com", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    assert count(admin_engine, "SELECT count(*) FROM users") == 0


def test_logout_without_csrf_token_is_refused(client, make_user):
    client.login(make_user().email)
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/team/").status_code == 200


def test_next_to_another_site_is_ignored(client, make_user):
    account = make_user()
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = client.post_form(
            f"/auth/login?next={target}", {"email": account.email, "password": PASSWORD}
        )
        assert response.status_code == 302
        assert response.location == "/team/", target
        client.post_form("/auth/logout")


def test_next_to_a_local_path_is_followed(client, make_user):
    account = make_user()
    response = client.post_form("/auth/login?next=/teams/new", {"email": account.email, "password": PASSWORD})
    assert response.location == "/teams/new"


def test_protected_page_sends_anonymous_user_to_login_with_next(client):
    response = client.get("/team/")
    assert response.status_code == 302
    assert response.location == "/auth/login?next=%2Fteam%2F"


def test_login_renews_the_session(client, make_user):
    account = make_user()
    client.get("/auth/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker before login"
    client.login(account.email)
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"] == str(account.user_id)


def test_old_password_hash_is_upgraded_at_login(client, make_user, admin_engine):
    from argon2 import PasswordHasher

    account = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET password_hash = :h WHERE id = :i"), {"h": weak, "i": account.user_id}
        )
    assert client.login(account.email).status_code == 302
    stored = scalar(admin_engine, "SELECT password_hash FROM users WHERE id = :i", i=account.user_id)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_every_error_page_renders(app, client):
    from nyxcore.error_pages import ERROR_TITLES

    with app.test_request_context():
        from nyxcore.error_pages import render_error

        for status, (title, _) in ERROR_TITLES.items():
            body, code = render_error(status)
            assert code == status
            assert title in body
    assert "Not found" in client.get("/no/such/page").get_data(as_text=True)


def _session_cookie(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def test_a_cookie_saved_before_logout_signs_no_one_in_afterwards(client, make_client, make_user, admin_engine):
    account = make_user()
    assert client.login(account.email).status_code == 302
    saved = _session_cookie(client)
    assert client.post_form("/auth/logout").status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NOT NULL") == 1
    # Replayed from another browser and address: the server-side session has ended.
    thief = make_client()
    thief.set_cookie("session", saved)
    replay = thief.get("/team/", environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert replay.status_code == 302
    assert replay.location.startswith("/auth/login")


def test_a_session_ends_when_idle_too_long_and_is_not_re_signed_on_every_request(app, client, make_user, admin_engine):
    account = make_user()
    assert client.login(account.email).status_code == 302
    assert client.get("/team/").status_code == 200  # remembers the active team in the cookie
    page = client.get("/team/")
    assert page.status_code == 200
    assert "Set-Cookie" not in page.headers  # the cookie only names the session; nothing to refresh
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE user_sessions SET last_seen_at = now() - interval '13 hours'"))
    assert client.get("/team/").location.startswith("/auth/login")


def test_each_login_is_its_own_session(client, make_client, make_user, admin_engine):
    account = make_user()
    assert client.login(account.email).status_code == 302
    other = make_client()
    assert other.login(account.email).status_code == 302
    assert client.post_form("/auth/logout").status_code == 302
    assert other.get("/team/").status_code == 200  # logging out one browser leaves the other signed in
    assert count(admin_engine, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL") == 1
    stored = count(admin_engine, "SELECT count(*) FROM user_sessions WHERE token_hash ~ '^[0-9a-f]{64}$'")
    assert stored == 2  # only the token's SHA-256 is kept


def test_a_sign_up_whose_team_cannot_be_made_leaves_nothing_behind(client, admin_engine, monkeypatch):
    # register_user flushes the user before it makes the personal team; the refusal rolls both back.
    from nyxcore.errors import Conflict
    from nyxcore.services import teams

    def refuse(**_: Any) -> None:
        raise Conflict("No team for you.", field="name")

    monkeypatch.setattr(teams, "create_team", refuse)
    response = client.post_form("/auth/signup", {"name": "Ada", "email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 409
    assert "No team for you." in response.get_data(as_text=True)
    assert count(admin_engine, "SELECT count(*) FROM users") == 0


def test_a_view_that_raises_after_a_flush_keeps_nothing_and_says_nothing(app, client, admin_engine, monkeypatch):
    from nyxcore.services import teams

    def broken(**_: Any) -> None:
        raise RuntimeError("a bug after the user was flushed")

    monkeypatch.setattr(teams, "create_team", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post_form("/auth/signup", {"name": "Ada", "email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 500
    assert count(admin_engine, "SELECT count(*) FROM users") == 0
    with client.session_transaction() as session:
        assert "_flashes" not in session  # no "Welcome" for an account that does not exist
