"""Invitations by magic link, end to end.

A real SMTP server (aiosmtpd on loopback), a real Celery worker thread on the test Redis, and
PostgreSQL with row-level security, the app connecting as the app role. Links are read from the
messages the SMTP server received, the way an invitee gets them.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import html
import http.cookiejar
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from werkzeug.serving import make_server

from nyxcore.roles import TenantRole
from nyxcore.services import invitations
from nyxcore.tasks import sweep_outbox
from tests.conftest import PASSWORD, REDIS_URL, csrf_from
from tests.helpers import count, dicts, refused_page, scalar
from tests.integration import worker as celery_worker
from tests.integration.mailserver import MailServer

pytestmark = pytest.mark.usefixtures("real_delivery")  # tests/integration/conftest.py
PUBLIC_URL = "http://nyxcore.test"
LINK_PREFIX = f"{PUBLIC_URL}/invite/"
TEAM = "Nyx Ops"


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def nyx_ops(team: Any, admin_engine: Engine) -> Any:
    """The `team` fixture, named "Nyx Ops" (a name with nothing to escape in HTML)."""
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET name = :n WHERE id = :t"), {"n": TEAM, "t": team.id})
    return team


def snapshot(admin_engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Everything an accept could change, to show that a refused one changed nothing."""
    return {
        "invitations": dicts(admin_engine, "SELECT * FROM invitations ORDER BY id"),
        "members": dicts(admin_engine, "SELECT * FROM tenant_members ORDER BY id"),
        "audit": dicts(admin_engine, "SELECT id, action, target FROM audit_events ORDER BY id"),
    }


def invite(client: Any, emails: str, role: TenantRole = TenantRole.MEMBER) -> Any:
    return client.post_form("/team/invitations", {"emails": emails, "role": role.value})


def link_path(message: Any) -> str:
    """The path of the one magic link in a received message."""
    links = MailServer.links(message, LINK_PREFIX)
    assert len(links) == 1, links
    return links[0].removeprefix(PUBLIC_URL)


def token_of(path: str) -> str:
    return path.removeprefix("/invite/")


def page(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


# --- the happy paths -----------------------------------------------------------------------------


def test_invitation_mail_arrives_through_the_worker_and_its_link_joins_the_team(
    nyx_ops, login_as, make_user, mail_server, worker, admin_engine
):
    admin = nyx_ops.accounts[TenantRole.ADMIN]
    invitee = make_user(name="Grace Hopper", email="grace@example.com")
    # The request's host is `localhost`; the link must be built from PUBLIC_URL all the same.
    response = invite(login_as(admin, nyx_ops.id), "Grace@Example.com")
    assert response.status_code == 200
    assert "1 of 1 address invited." in page(response)

    message = mail_server.wait_for(1)[0]
    assert message["To"] == "grace@example.com"
    assert message["Subject"] == f"{admin.name} invited you to {TEAM} on NyxCore"
    assert message.get_content_type() == "multipart/alternative"
    # What spam filters look for: a Date, and a Message-ID in the sender's own domain.
    sent_at = email.utils.parsedate_to_datetime(message["Date"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    sender_domain = email.utils.parseaddr(message["From"])[1].rpartition("@")[2]
    assert re.fullmatch(rf"<[0-9a-f-]{{36}}@{re.escape(sender_domain)}>", message["Message-ID"])
    assert sender_domain != "nyxcore"
    path = link_path(message)
    assert re.fullmatch(r"/invite/[A-Za-z0-9_-]{43}", path)
    assert PUBLIC_URL + path in mail_server.html(message)
    expires = scalar(admin_engine, "SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM invitations")
    assert f"expires on {expires}" in mail_server.text(message)
    assert "as a member" in mail_server.text(message)

    client = login_as(invitee)
    for _ in range(2):  # showing the invitation (a mail scanner, a reload) never consumes it
        shown = client.get(path)
        assert shown.status_code == 200
        assert shown.headers["Referrer-Policy"] == "strict-origin"  # the origin only: never the token
        assert f"{admin.name} invited grace@example.com to {TEAM} as member" in re.sub(
            r"<[^>]+>", "", page(shown)
        )
        assert f"Accept and join {TEAM}" in page(shown)
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NULL") == 1

    accepted = client.post_form(path)
    assert accepted.status_code == 302
    assert accepted.location == "/team/"
    overview = page(client.get("/team/"))
    assert f"Welcome to {TEAM}. You joined as member." in overview
    assert f"<h1>{TEAM}</h1>" in overview  # the new team is the active one
    member = dicts(
        admin_engine,
        "SELECT role, invited_by, invited_at, joined_at FROM tenant_members WHERE tenant_id = :t AND user_id = :u",
        t=nyx_ops.id,
        u=invitee.user_id,
    )
    assert len(member) == 1
    assert member[0]["role"] == "member"
    assert member[0]["invited_by"] == admin.user_id
    assert member[0]["invited_at"] is not None and member[0]["joined_at"] is not None
    invitation = dicts(admin_engine, "SELECT consumed_at, consumed_by FROM invitations")[0]
    assert invitation["consumed_by"] == invitee.user_id
    assert invitation["consumed_at"] == member[0]["joined_at"]
    outbox = dicts(admin_engine, "SELECT sent_at, attempts, body_ciphertext FROM outbox_emails")[0]
    assert outbox["sent_at"] is not None and outbox["attempts"] == 1
    assert outbox["body_ciphertext"] is None  # wiped once sent
    actions = dicts(
        admin_engine, "SELECT action, target, details FROM audit_events WHERE tenant_id = :t", t=nyx_ops.id
    )
    assert {
        "action": "invitation.created",
        "target": "grace@example.com",
        "details": {"role": "member"},
    } in actions
    assert {
        "action": "invitation.accepted",
        "target": "grace@example.com",
        "details": {"role": "member"},
    } in actions


def test_new_person_signs_up_through_the_link_and_joins_in_one_step(
    nyx_ops, client, mail_server, worker, admin_engine, as_owner
):
    invite(as_owner, "newcomer@example.com", TenantRole.ADMIN)
    path = link_path(mail_server.wait_for(1)[0])
    teams_before = count(admin_engine, "SELECT count(*) FROM tenants")

    shown = page(client.get(path))
    assert "Sign up as newcomer@example.com" in shown
    assert re.search(r'href="/auth/login\?[^"]+"', shown)
    assert f'href="{path}/signup"' in shown
    form = client.get(path + "/signup")
    assert form.status_code == 200
    assert form.headers["Referrer-Policy"] == "strict-origin"
    assert re.search(r'<input[^>]*value="newcomer@example.com" readonly', page(form))
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NULL") == 1

    # An address typed into the request is ignored: the account is the invitation's.
    signed_up = client.post_form(
        path + "/signup", {"name": "Nia Newcomer", "email": "mallory@example.com", "password": PASSWORD}
    )
    assert signed_up.status_code == 303
    assert signed_up.location == "/team/"
    overview = page(client.get("/team/"))
    assert f"Welcome to {TEAM}. You joined as admin." in overview
    assert f"<h1>{TEAM}</h1>" in overview
    assert "Verify your e-mail address" not in overview  # the link proved it
    user = dicts(admin_engine, "SELECT id, email, email_verified_at FROM users WHERE name = 'Nia Newcomer'")
    assert len(user) == 1 and user[0]["email"] == "newcomer@example.com"
    assert user[0]["email_verified_at"] is not None
    memberships = dicts(admin_engine, "SELECT tenant_id, role FROM tenant_members WHERE user_id = :u", u=user[0]["id"])
    assert memberships == [{"tenant_id": nyx_ops.id, "role": "admin"}]  # and no personal team
    assert count(admin_engine, "SELECT count(*) FROM tenants") == teams_before
    assert scalar(admin_engine, "SELECT consumed_by FROM invitations") == user[0]["id"]
    assert client.get(path + "/signup").status_code == 302  # signed in now: back to the invitation
    assert client.post_form("/auth/logout").status_code == 302
    assert client.get(path + "/signup").status_code == 410  # used


def test_signing_up_through_a_link_for_an_address_with_an_account_changes_nothing(
    nyx_ops, make_user, client, mail_server, worker, admin_engine, as_owner
):
    make_user(email="lin@example.com")
    invite(as_owner, "lin@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    before = snapshot(admin_engine)
    refused = client.post_form(path + "/signup", {"name": "Lin Again", "password": PASSWORD})
    assert refused.status_code == 409
    assert "An account with this email already exists. Log in instead." in page(refused)
    assert snapshot(admin_engine) == before
    assert count(admin_engine, "SELECT count(*) FROM users WHERE name = 'Lin Again'") == 0


def test_accepting_an_invitation_verifies_the_address(
    nyx_ops, make_user, login_as, mail_server, worker, admin_engine, as_owner
):
    unverified = make_user(email="una@example.com", verified=False)
    invite(as_owner, "una@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    assert login_as(unverified).post_form(path).location == "/team/"
    assert scalar(admin_engine, "SELECT email_verified_at FROM users WHERE id = :u", u=unverified.user_id) is not None


def test_signed_out_accept_sends_to_login_and_back(
    nyx_ops, make_user, client, mail_server, worker, as_admin
):
    invitee = make_user(email="lin@example.com")
    invite(as_admin, "lin@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    refused = client.post_form(path)
    assert refused.status_code == 302
    assert refused.location == "/auth/login?next=" + urllib.parse.quote(path, safe="")
    logged_in = client.post_form(refused.location, {"email": invitee.email, "password": PASSWORD})
    assert logged_in.location == path
    assert client.post_form(path).location == "/team/"


# --- refusals that change nothing ----------------------------------------------------------------


def test_signed_in_as_another_address_is_refused_and_nothing_changes(
    nyx_ops, login_as, make_user, mail_server, worker, admin_engine, as_admin
):
    make_user(email="right@example.com")
    wrong = make_user(email="wrong@example.com")
    invite(as_admin, "Right@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    before = snapshot(admin_engine)

    client = login_as(wrong)
    shown = client.get(path)
    assert shown.status_code == 403
    assert "is not for this account: it was sent to another e-mail address than wrong@example.com" in page(
        shown
    )
    assert "right@example.com" not in page(shown).lower()  # not shown to someone signed in as another
    assert "Accept and join" not in page(shown)
    posted = client.post_form(path)
    assert posted.status_code == 403
    assert "is not for this account" in page(posted) and "right@example.com" not in page(posted).lower()
    assert snapshot(admin_engine) == before


def test_already_a_member_is_told_so_and_the_invitation_stays_open(
    nyx_ops, login_as, make_user, add_member, mail_server, worker, admin_engine, as_admin
):
    person = make_user(email="twice@example.com")
    invite(as_admin, "twice@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    add_member(nyx_ops.id, person, TenantRole.VIEWER)  # joined some other way meanwhile
    before = snapshot(admin_engine)

    client = login_as(person)
    assert f"You are already a member of {TEAM}." in page(client.get(path))
    posted = client.post_form(path)
    assert posted.location == "/team/"
    overview = page(client.get("/team/"))
    assert f"You are already a member of {TEAM}." in overview
    assert f"<h1>{TEAM}</h1>" in overview
    # Not consumed (the admin still sees it pending and may revoke it), and the role is unchanged.
    assert snapshot(admin_engine) == before


def test_expired_revoked_replaced_and_used_links_answer_410_and_change_nothing(
    nyx_ops, login_as, make_user, make_client, mail_server, worker, admin_engine, as_admin
):
    people = {name: make_user(email=f"{name}@example.com") for name in ("late", "dropped", "resent", "quick")}
    admin = as_admin
    invite(admin, "\n".join(f"{name}@example.com" for name in people))
    paths = {m["To"].split("@")[0]: link_path(m) for m in mail_server.wait_for(4)}

    with admin_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE invitations SET expires_at = now() - interval '1 minute' WHERE email = 'late@example.com'"
            )
        )
    ids = {r["email"]: r["id"] for r in dicts(admin_engine, "SELECT id, email FROM invitations")}
    assert admin.confirm(f"/team/invitations/{ids['dropped@example.com']}/revoke").status_code == 302
    assert admin.post_form(f"/team/invitations/{ids['resent@example.com']}/resend").status_code == 302
    new_resent_path = link_path(mail_server.wait_for(5)[4])
    quick = login_as(people["quick"])
    assert quick.post_form(paths["quick"]).location == "/team/"

    expected = {
        "late": "expired on",
        "dropped": "was revoked",
        "resent": "was replaced by a newer invitation",
        "quick": "has already been used",
    }
    someone_else = login_as(make_user())
    invitees = {name: quick if name == "quick" else login_as(people[name]) for name in expected}
    before = snapshot(admin_engine)
    for name, reason in expected.items():
        visitors = {"signed out": make_client(), "the invitee": invitees[name], "someone else": someone_else}
        if name == "quick":  # the one who used it is told they are a member instead
            assert f"already a member of {TEAM}" in page(quick.get(paths[name]))
            del visitors["the invitee"]
        for who, visitor in visitors.items():
            for response in (visitor.get(paths[name]), visitor.post_form(paths[name])):
                assert response.status_code == 410, (name, who, response.request.method)
                assert reason in page(response), (name, who)
    assert snapshot(admin_engine) == before
    # The replacement link works.
    assert login_as(people["resent"]).post_form(new_resent_path).location == "/team/"


def test_unknown_or_malformed_token_is_404(client, make_client):
    for path in ("/invite/" + "x" * 43, "/invite/short", "/invite/" + "a" * 44):
        assert client.get(path).status_code == 404
        assert client.post_form(path).status_code == 404


def test_twenty_concurrent_accepts_make_exactly_one_membership(
    nyx_ops, login_as, make_user, make_client, mail_server, worker, admin_engine, as_admin
):
    invitee = make_user(email="race@example.com")
    invite(as_admin, "race@example.com")
    path = link_path(mail_server.wait_for(1)[0])
    signed_in = login_as(invitee)
    session_cookie = signed_in.get_cookie("session")
    assert session_cookie is not None
    clients = []
    for _ in range(20):
        c = make_client()
        c.set_cookie("session", session_cookie.value)
        c.csrf_token()  # put the CSRF secret into each client's own copy of the session first
        clients.append(c)
    start = threading.Barrier(len(clients))
    statuses: list[int] = []
    errors: list[BaseException] = []

    def accept(c: Any) -> None:
        try:
            start.wait(timeout=10)
            statuses.append(c.post_form(path).status_code)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=accept, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(statuses) == 20
    # Winner and late-comers who find the membership redirect (302); losers of the UPDATE see 410.
    assert set(statuses) <= {302, 410}, statuses
    assert (
        count(
            admin_engine,
            "SELECT count(*) FROM tenant_members WHERE tenant_id = :t AND user_id = :u",
            t=nyx_ops.id,
            u=invitee.user_id,
        )
        == 1
    )
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'invitation.accepted'") == 1
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_by = :u", u=invitee.user_id) == 1


# --- delivery: outages and retries ---------------------------------------------------------------


def test_broker_outage_keeps_the_invitation_and_the_sweep_delivers_exactly_once(
    app, nyx_ops, mail_server, admin_engine, caplog, as_admin
):
    celery = app.extensions["celery"]
    celery.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there: the broker is down
    celery_worker.forget_broker_connections(celery)
    try:
        with caplog.at_level(logging.WARNING, logger="nyxcore.mail"):
            response = invite(as_admin, "patient@example.com")
        assert response.status_code == 200
        assert "1 of 1 address invited." in page(response)
        assert "the sweep will retry" in caplog.text
    finally:
        celery.conf.broker_url = REDIS_URL
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE email = 'patient@example.com'") == 1
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NULL") == 1

    with celery_worker.running_worker(app):
        assert sweep_outbox(older_than_seconds=0) == 1
        message = mail_server.wait_for(1)[0]
        assert message["To"] == "patient@example.com"
        # The SMTP server has the message a moment before the worker commits sent_at.
        deadline = time.monotonic() + 10
        while (
            count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NULL")
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert sweep_outbox(older_than_seconds=0) == 0  # nothing left unsent
        mail_server.assert_quiet(1.0, expected=1)
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NOT NULL") == 1


def test_smtp_refusing_at_first_is_retried_and_delivers_once(
    nyx_ops, mail_server, worker, admin_engine, as_admin
):
    mail_server.refuse_next(2)  # "451 4.3.0 Try again later" twice, then accept
    invite(as_admin, "greylisted@example.com")
    # The task retries with exponential backoff (factor 2, full jitter): at most 2 s, then 4 s.
    message = mail_server.wait_for(1, timeout=15)[0]
    assert message["To"] == "greylisted@example.com"
    mail_server.assert_quiet(1.0, expected=1)
    assert mail_server.attempts == 3
    outbox = dicts(admin_engine, "SELECT attempts, sent_at, last_error FROM outbox_emails")[0]
    assert outbox["attempts"] == 3
    assert outbox["sent_at"] is not None
    assert outbox["last_error"] is None


def test_revoking_before_delivery_cancels_the_email(app, nyx_ops, mail_server, admin_engine, as_admin):
    admin = as_admin
    invite(admin, "oops@example.com")  # no worker yet: the message waits in the queue
    invitation_id = scalar(admin_engine, "SELECT id FROM invitations")
    assert admin.confirm(f"/team/invitations/{invitation_id}/revoke").status_code == 302
    with celery_worker.running_worker(app):
        assert sweep_outbox(older_than_seconds=0) == 0
        mail_server.assert_quiet(1.5)
    assert scalar(admin_engine, "SELECT last_error FROM outbox_emails") == (
        "Not sent: the invitation was revoked before delivery."
    )


# --- the token rests nowhere ---------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every string in a Redis value, with JSON walked and base64 (how kombu stores bodies) decoded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        yield value
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            yield from _strings(parsed)
        elif len(value) >= 16 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", value):
            try:
                decoded = base64.b64decode(value, validate=False)
            except (binascii.Error, ValueError):
                decoded = b""
            yield from _strings(decoded) if decoded else ()
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def redis_contents(url: str = REDIS_URL) -> list[str]:
    """Every key and value in the broker's Redis database, decoded as far as it goes."""
    client = redis.Redis.from_url(url)
    found: list[str] = []
    try:
        for key in client.scan_iter(count=1000):
            found.extend(_strings(key))
            kind = client.type(key)
            if kind == b"string":
                values: list[Any] = [client.get(key)]
            elif kind == b"list":
                values = list(client.lrange(key, 0, -1))
            elif kind == b"hash":
                values = [item for pair in client.hgetall(key).items() for item in pair]
            elif kind == b"set":
                values = list(client.smembers(key))
            elif kind == b"zset":
                values = list(client.zrange(key, 0, -1))
            else:
                values = []
            for value in values:
                found.extend(_strings(value))
    finally:
        client.close()
    return found


def database_columns_containing(admin_engine: Engine, needle: str) -> list[str]:
    """`table.column` of every column, of every table, whose value anywhere contains `needle`."""
    hits = []
    with admin_engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
            )
        ).all()
        for table, column, data_type in columns:
            if data_type == "bytea":
                condition = f"position(convert_to(:n, 'UTF8') in \"{column}\") > 0"
            else:
                condition = f'strpos("{column}"::text, :n) > 0'
            if conn.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE {condition}'), {"n": needle}
            ).scalar_one():
                hits.append(f"{table}.{column}")
    return hits


class LiveServer:
    """The app behind a real werkzeug HTTP server on loopback, so its access log lines are real."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def request(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, Location, body) of a GET, or of a POST when `data` is given."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.url + path, data=body, timeout=10) as response:
                return response.status, response.headers.get("Location", ""), response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers.get("Location", ""), exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_the_raw_token_rests_nowhere_in_the_database_redis_or_logs(
    app, nyx_ops, make_user, mail_server, admin_engine, caplog, as_admin
):
    caplog.set_level(logging.DEBUG)
    invitee = make_user(email="secret-keeper@example.com")
    invite(as_admin, "secret-keeper@example.com")
    outbox_id = str(scalar(admin_engine, "SELECT id FROM outbox_emails"))
    while_queued = redis_contents()  # the Celery message waits in the queue: no worker yet
    assert any(outbox_id in s for s in while_queued), "the scan must see the task message and its argument"

    with celery_worker.running_worker(app, purge_first=False):  # it takes the waiting message
        path = link_path(mail_server.wait_for(1)[0])
    token = token_of(path)
    assert scalar(admin_engine, "SELECT token_hash FROM invitations") == invitations.hash_token(token)

    # Follow the link over real HTTP, signed out: a POST to it (as when a session ended between
    # showing and accepting) sends to the login page with next=%2Finvite%2F<token>, whose form
    # posts to ?next=/invite/<token>.
    with LiveServer(app) as live:
        status, _, body = live.request(path)
        assert status == 200
        _, _, login_page = live.request("/auth/login")
        status, login, _ = live.request(path, {"csrf_token": csrf_from(login_page)})
        assert status == 302
        assert login.startswith("/auth/login?next=%2Finvite%2F")
        status, _, body = live.request(login)
        assert status == 200
        form = re.search(r'<form method="post" action="([^"]+)"', body)
        assert form
        status, location, _ = live.request(
            html.unescape(form.group(1)),
            {"csrf_token": csrf_from(body), "email": invitee.email, "password": PASSWORD},
        )
        assert (status, location) == (302, path)
        status, _, body = live.request(path)
        status, location, _ = live.request(path, {"csrf_token": csrf_from(body)})
        assert (status, location) == (302, "/team/")
    # The werkzeug server logs paths decoded; gunicorn logs the raw request line, percent-encoded.
    logging.getLogger("gunicorn.access").info('127.0.0.1 "GET %s HTTP/1.1" 200', login)

    assert database_columns_containing(admin_engine, token) == []
    assert database_columns_containing(admin_engine, invitations.hash_token(token)) == [
        "invitations.token_hash"
    ]
    assert not [s for s in while_queued if token in s]
    assert not [s for s in redis_contents() if token in s]
    # aiosmtpd's own logger ("mail.log") is the receiving mail server: the recipient may see the link.
    records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    logged = "\n".join(r.getMessage() for r in records) + caplog.text
    assert "/invite/[redacted]" in logged, "the access log must have logged the magic link, redacted"
    assert "%2Finvite%2F[redacted]" in logged
    assert token not in "\n".join(r.getMessage() for r in records)
    assert token not in "\n".join(line for line in caplog.text.splitlines() if " mail.log" not in line)


# --- the admin side ------------------------------------------------------------------------------


def test_bulk_invite_reports_each_address(nyx_ops, admin_engine, as_admin):
    member = nyx_ops.accounts[TenantRole.MEMBER]
    admin = as_admin
    assert invite(admin, "pending@example.com").status_code == 200
    emails = "\n".join(
        [
            "one@example.com, ONE@example.com",  # the same address twice
            member.email.upper(),  # already a member, in another letter case
            "Pending@Example.com",  # already invited
            "not-an-email",
            "Two Person <two@example.com>; three@example.com",
        ]
    )
    response = invite(admin, emails)
    assert response.status_code == 200
    body = page(response)
    assert "3 of 6 addresses invited." in body
    results = {
        address: outcome
        for outcome, address in re.findall(r'<tr class="result-(\w+)">\s*<td[^>]*>([^<]+)</td>', body)
    }
    assert results == {
        "one@example.com": "invited",
        member.email: "already_member",
        "pending@example.com": "already_invited",
        "not-an-email": "invalid",
        "two@example.com": "invited",
        "three@example.com": "invited",
    }
    pending_id = scalar(admin_engine, "SELECT id FROM invitations WHERE email = 'pending@example.com'")
    assert f'action="/team/invitations/{pending_id}/resend"' in body  # offered a resend
    assert "not-an-email is not a valid email address." in body
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 4
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails") == 4
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'invitation.created'") == 4


def test_bulk_invite_limits_and_empty_input(nyx_ops, admin_engine, as_admin):
    admin = as_admin
    too_many = invite(admin, ",".join(f"p{n}@example.com" for n in range(51)))
    assert too_many.status_code == 400
    assert "You entered 51 addresses; invite at most 50 at once." in page(too_many)
    assert invite(admin, " \n , ").status_code == 400
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 0
    fifty = invite(admin, ",".join(f"p{n}@example.com" for n in range(50)))
    assert "50 of 50 addresses invited." in page(fifty)


def test_roles_an_inviter_may_grant(nyx_ops, admin_engine, as_owner, as_admin):
    admin = as_admin
    form = page(admin.get("/team/invitations"))
    options = re.findall(r'<option[^>]*value="(\w+)"', form)
    assert options == ["member", "viewer"]
    for role in (TenantRole.OWNER, TenantRole.ADMIN):
        refused = invite(admin, "boss@example.com", role)
        assert refused.status_code == 403
        assert f"Your role cannot invite someone as {role.value}." in page(refused)
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 0
    owner = as_owner
    assert invite(owner, "boss@example.com", TenantRole.OWNER).status_code == 200
    assert scalar(admin_engine, "SELECT role FROM invitations") == "owner"
    # An admin cannot revoke or resend an invitation above their own role.
    owner_invite = scalar(admin_engine, "SELECT id FROM invitations")
    assert admin.confirm(f"/team/invitations/{owner_invite}/revoke").status_code == 403
    assert admin.post_form(f"/team/invitations/{owner_invite}/resend").status_code == 403
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE revoked_at IS NULL") == 1


def test_pending_list_shows_role_inviter_expiry_and_delivery_state(nyx_ops, login_as, admin_engine):
    admin_account = nyx_ops.accounts[TenantRole.ADMIN]
    admin = login_as(admin_account, nyx_ops.id)
    invite(
        admin,
        "sent@example.com, failed@example.com, queued@example.com, stale@example.com",
        TenantRole.VIEWER,
    )
    with admin_engine.begin() as conn:
        outbox = {
            r.email: r.outbox_email_id
            for r in conn.execute(text("SELECT email, outbox_email_id FROM invitations"))
        }
        conn.execute(
            text("UPDATE outbox_emails SET sent_at = '2026-11-20 10:30+00', attempts = 1 WHERE id = :i"),
            {"i": outbox["sent@example.com"]},
        )
        conn.execute(
            text(
                "UPDATE outbox_emails SET attempts = 2, failure = 'deferred' WHERE id = :i"
            ),
            {"i": outbox["failed@example.com"]},
        )
        conn.execute(
            text(
                "UPDATE invitations SET expires_at = now() - interval '1 day' WHERE email = 'stale@example.com'"
            )
        )
    body = page(admin.get("/team/invitations"))
    assert "Pending invitations (4)" in body

    def row(email: str) -> str:
        match = re.search(
            rf"<tr id=\"invitation-[^\"]+\">\s*<td[^>]*>{re.escape(email)}</td>(.*?)</tr>", body, re.S
        )
        assert match, email
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))

    assert "Viewer" in row("sent@example.com") and admin_account.name in row("sent@example.com")
    assert "Sent 2026-11-20 10:30 UTC" in row("sent@example.com")
    assert (
        "Queued Not delivered yet: the mail server asked to try again later; it will be tried again (2 attempts)."
        in row("failed@example.com")
    )
    assert "Queued" in row("queued@example.com")
    assert "Expired" in row("stale@example.com") and "Expired" not in row("queued@example.com")
    assert "Renew" in row("stale@example.com") and "Revoke" in row("stale@example.com")
    assert "Resend" not in row("stale@example.com") and "Renew" not in row("sent@example.com")


def test_resend_replaces_the_pending_invitation(nyx_ops, admin_engine, as_admin):
    admin = as_admin
    invite(admin, "again@example.com")
    old = dicts(admin_engine, "SELECT id, token_hash FROM invitations")[0]
    response = admin.post_form(f"/team/invitations/{old['id']}/resend")
    assert response.status_code == 302
    assert "A new invitation is on its way to again@example.com" in page(admin.get(response.location))
    after = dicts(
        admin_engine,
        "SELECT id, token_hash, revoked_reason FROM invitations ORDER BY created_at, revoked_at NULLS LAST",
    )
    assert len(after) == 2
    assert {r["revoked_reason"] for r in after} == {"resent", None}
    assert len({r["token_hash"] for r in after}) == 2
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails") == 2
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'invitation.resent'") == 1
    # Resending or revoking the replaced one again is a conflict, not a second invitation.
    resent = admin.post_form(f"/team/invitations/{old['id']}/resend")
    assert "was already revoked or replaced" in refused_page(admin, resent, "/team/invitations")
    revoked = admin.confirm(f"/team/invitations/{old['id']}/revoke")
    assert "was already revoked or replaced" in refused_page(admin, revoked, "/team/invitations")
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 2


def test_another_teams_or_an_unknown_invitation_is_404(nyx_ops, login_as, make_user, admin_engine, as_admin):
    other_owner = make_user(name="Other Owner")
    invite(login_as(other_owner, other_owner.team_id), "theirs@example.com")
    theirs = scalar(admin_engine, "SELECT id FROM invitations")
    before = snapshot(admin_engine)
    admin = as_admin
    for invitation_id in (theirs, uuid.uuid4()):
        for action in ("resend", "revoke"):
            assert admin.post_form(f"/team/invitations/{invitation_id}/{action}").status_code == 404
    assert "theirs@example.com" not in page(admin.get("/team/invitations"))
    assert snapshot(admin_engine) == before


# --- rate limits ---------------------------------------------------------------------------------


def _unique_address() -> str:
    """A client address no other test run uses, so that counters in the shared Redis start at zero."""
    n = uuid.uuid4().int
    return f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}.{(n >> 16) % 250 + 1}"


def test_magic_link_requests_are_rate_limited_per_client_address(app_config, request):
    app_config.update(RATELIMIT_ENABLED=True, RATELIMIT_MAGIC_LINK="3 per minute")
    make_client = request.getfixturevalue("make_client")
    scanner, neighbour = make_client(), make_client()
    scanner.environ_base["REMOTE_ADDR"] = _unique_address()
    neighbour.environ_base["REMOTE_ADDR"] = _unique_address()
    paths = [f"/invite/{uuid.uuid4().hex}{'x' * 11}" for _ in range(3)]  # token-shaped, unknown
    assert [scanner.get(p).status_code for p in paths] == [404, 404, 404]
    limited = scanner.post_form("/invite/" + "y" * 43)  # GET and POST share one budget
    assert limited.status_code == 429
    assert "Too many requests" in page(limited)
    assert neighbour.get(paths[0]).status_code == 404  # another address has its own budget


def test_invitations_per_team_per_hour_count_addresses(app_config, request, admin_engine):
    # RATELIMIT_ENABLED switches every limit on, the login's too: give it room.
    app_config.update(  # a prefix of its own: no other test's counts in the shared Redis (a flake under xdist)
        RATELIMIT_ENABLED=True,
        INVITATIONS_PER_TEAM_PER_HOUR=3,
        RATELIMIT_LOGIN="1000 per minute",
        RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
    )
    team = request.getfixturevalue("nyx_ops")
    admin = request.getfixturevalue("login_as")(team.accounts[TenantRole.ADMIN], team.id)
    assert "2 of 2 addresses invited." in page(invite(admin, "a@example.com, b@example.com"))
    refused = invite(admin, "c@example.com, d@example.com")
    assert refused.status_code == 429
    assert "This team may send 3 invitations an hour and has 1 left now." in page(refused)
    # Room for two frees when the first of the hour leaves the window, an hour after it was sent.
    assert "Invite fewer people at once, or try again in 60 minutes." in page(refused)
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 2  # nobody of the refused batch
    assert "1 of 1 address invited." in page(invite(admin, "c@example.com"))
    full = invite(admin, "d@example.com")
    assert full.status_code == 429
    assert "has 0 left now." in page(full)
    # Back-date the hour's first two: room for one more frees when the older of them leaves.
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE invitations SET created_at = now() - interval '50 minutes' WHERE email = 'a@example.com'"
        )
        conn.exec_driver_sql(
            "UPDATE invitations SET created_at = now() - interval '30 minutes' WHERE email = 'b@example.com'"
        )
    assert "try again in 10 minutes." in page(invite(admin, "d@example.com"))
    assert "try again in 30 minutes." in page(invite(admin, "d@example.com, e@example.com"))
    assert "Invite at most 3 people at once." in page(invite(admin, "f@a.com, g@a.com, h@a.com, i@a.com"))
