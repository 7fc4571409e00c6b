"""Every request's fixed cost (issue 15): a request pays only for what it uses.

A page that never touches the database begins no transaction and sends no COMMIT; Flask-Limiter
runs only in the views that declare limits; the WSGI entry point freezes the app's objects out of
the garbage collector's reach; a pooled connection is pinged only when it sat idle. (The session cookie that is not re-signed on every response is
pinned in test_auth.py, next to the server-side session's ending.)
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import session
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session

from nyxcore import database, tenancy
from nyxcore.database import configure_engine
from nyxcore.extensions import db, limiter, login_manager
from nyxcore.models import Note
from nyxcore.roles import TenantRole
from nyxcore.services.invitations import tokens as invitation_tokens
from tests.conftest import csrf_from
from tests.helpers import count, insert_invitation, member_id, recorded_executions

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def transactions() -> Iterator[dict[str, int]]:
    """Count the ORM sessions' transactions begun and committed inside the block."""
    seen = {"begun": 0, "committed": 0}

    def begun(*args: object) -> None:
        seen["begun"] += 1

    def committed(*args: object) -> None:
        seen["committed"] += 1

    event.listen(Session, "after_begin", begun)
    event.listen(Session, "after_commit", committed)
    try:
        yield seen
    finally:
        event.remove(Session, "after_begin", begun)
        event.remove(Session, "after_commit", committed)


def test_a_page_without_the_database_begins_no_transaction(anonymous):
    anonymous.get("/auth/login")
    with transactions() as seen:
        assert anonymous.get("/auth/login").status_code == 200
    assert seen == {"begun": 0, "committed": 0}


def test_a_signed_in_page_commits_once(as_member):
    with transactions() as seen:
        assert as_member.get("/team/").status_code == 200
    assert seen == {"begun": 1, "committed": 1}


def test_the_requests_commit_expires_nothing_it_loaded_and_leaves_the_setting_as_it_was(as_member):
    """The one commit at the end of a request keeps the user it loaded as it was (nothing reads it again:
    expiring the user, membership and team was work for nothing); sessions still expire on commit."""
    users: list[object] = []

    def committed(session: Session) -> None:  # runs before the commit expires anything
        users.extend(obj for obj in session.identity_map.values() if obj.__class__.__name__ == "User")
        users.append(session.expire_on_commit)

    event.listen(Session, "after_commit", committed)
    try:
        assert as_member.get("/team/").status_code == 200
    finally:
        event.remove(Session, "after_commit", committed)
    user, setting = users
    assert setting is False
    assert {"name", "email"} <= set(vars(user))  # still loaded after the commit and the session's end
    with as_member.application.test_request_context():
        assert db.session().expire_on_commit is True


def test_a_page_that_raises_commits_nothing(as_viewer):
    with transactions() as seen:
        assert as_viewer.get("/team/settings").status_code == 403
    assert seen["committed"] == 0


LIMITS_ON = {"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_MAGIC_LINK": "2 per minute"}


@pytest.mark.own_app
def test_the_limiter_checks_only_views_that_declare_limits(app_config, request):
    app_config.update(LIMITS_ON, RATELIMIT_KEY_PREFIX=f"cost-{os.getpid()}-{id(request)}")
    app = request.getfixturevalue("app")
    assert limiter._check_request_limit not in app.before_request_funcs[None]
    client = app.test_client()
    assert client.get("/auth/login").status_code == 200
    statuses = [client.get("/invite/not-a-real-token-but-long-enough").status_code for _ in range(3)]
    assert statuses == [404, 404, 429]  # the magic-link view's own limit still counts


@pytest.mark.own_app
def test_an_app_wide_limit_keeps_the_limiter_on_every_request(app_config, request):
    app_config.update(LIMITS_ON, RATELIMIT_DEFAULT="2 per minute")
    app = request.getfixturevalue("app")
    assert limiter._check_request_limit in app.before_request_funcs[None]


def test_the_wsgi_entry_point_freezes_the_app_out_of_the_collector():
    environ = {**os.environ, "NYXCORE_ENV": "testing", "DATABASE_URL": "sqlite://", "REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "-c", "import gc, wsgi; print(gc.get_freeze_count())"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(done.stdout.strip().splitlines()[-1]) > 10_000


def test_a_pooled_connection_is_pinged_only_after_sitting_idle(app_config, admin_engine):
    engine = create_engine(app_config["SQLALCHEMY_DATABASE_URI"], **app_config["SQLALCHEMY_ENGINE_OPTIONS"])
    configure_engine(engine, ping_idle_seconds=0.5)
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: object) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]

    def backend() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    try:
        first = backend()
        assert backend() == first  # the same pooled connection, back a moment ago: no ping
        assert pings == []
        with admin_engine.begin() as admin:  # the connection dies while it waits in the pool
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        time.sleep(0.6)
        replaced = backend()  # pinged, found dead, replaced: the caller never sees the error
        assert replaced != first
        assert pings == [1]
    finally:
        engine.dispose()


@pytest.mark.own_app
def test_the_limiters_headers_come_only_with_a_checked_limit(app_config, request):
    app_config.update(LIMITS_ON, RATELIMIT_KEY_PREFIX=f"cost-{os.getpid()}-{id(request)}-headers")
    client = request.getfixturevalue("app").test_client()
    limited = client.get("/invite/not-a-real-token-but-long-enough")
    assert limited.headers["X-RateLimit-Limit"] == "2"  # its after_request hook still runs there
    assert "X-RateLimit-Limit" not in client.get("/no-such-page").headers


def test_a_request_without_a_session_cookie_asks_flask_login_nothing(anonymous, as_member, monkeypatch):
    # Flask-Login's session protection hashes the client's address and browser on every load.
    asked: list[int] = []
    generate = login_manager._session_identifier_generator
    monkeypatch.setattr(login_manager, "_session_identifier_generator", lambda: asked.append(1) or generate())
    answer = anonymous.get("/auth/login")
    assert answer.status_code == 200 and "Log in" in answer.get_data(as_text=True)
    assert asked == []
    assert as_member.get("/team/").status_code == 200
    assert asked  # a signed-in session is still checked


def test_the_session_cookie_is_still_read_and_a_bad_one_ignored(as_member, anonymous):
    assert as_member.get("/team/").status_code == 200  # signed in through the cookie
    anonymous.set_cookie("session", "not.a.signed.value")
    assert anonymous.get("/team/").status_code == 302


@pytest.mark.parametrize("path", ["/auth/login", "/no-such-page", "/static/does-not-exist.css"])
def test_every_answer_carries_the_security_headers_once(anonymous, path):
    headers = anonymous.get(path).headers
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options",
                 "Cross-Origin-Opener-Policy", "X-Request-ID"):
        assert len(headers.get_all(name)) == 1, name
    assert headers["Referrer-Policy"] == "same-origin"


def test_hooks_are_checked_for_coroutines_once_and_per_request_closures_do_not_pile_up(app):
    from nyxcore.web import _SYNC_CACHE_SIZE

    hook = app.before_request_funcs[None][0]
    assert app.ensure_sync(hook) is app.ensure_sync(hook) is hook
    for _ in range(_SYNC_CACHE_SIZE + 10):
        app.ensure_sync(lambda response: response)
    assert len(app._synchronous) <= _SYNC_CACHE_SIZE


def _statements_sent(app, client, path):
    """The statements of GET `path` as they leave for the server (after the tenant-context prefix)."""
    return [statement for statement, _ in _sent_with_parameters(app, client, path)]


def _sent_with_parameters(app, client, path):
    """_statements_sent's statements, each with the parameters psycopg2 fills into it."""
    with recorded_executions(app) as sent:
        assert client.get(path).status_code == 200
    return sent


@pytest.mark.committed  # not inside a test's outer transaction: the page's own transaction
def test_the_team_page_begins_its_transaction_with_its_first_statement(app, team, login_as):
    # Round trips: the statements below plus COMMIT; psycopg2 sends no BEGIN of its own (autocommit).
    admin = login_as(team.accounts[TenantRole.ADMIN], team.id)
    admin.get("/team/")
    sent = _statements_sent(app, admin, "/team/")
    assert sent[0].startswith("BEGIN; SET LOCAL app.user_id = '")
    assert not any("BEGIN" in statement for statement in sent[1:])
    assert len(sent) + 1 <= 4  # and the COMMIT
    with app.app_context(), db.engine.connect() as conn:
        assert conn.connection.dbapi_connection.autocommit is True


@pytest.mark.committed
def test_a_transaction_is_one_server_transaction_and_ends_with_it(app):
    with app.app_context(), db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT set_config('nyxcore.probe', 'on', true)")
        assert conn.exec_driver_sql("SELECT current_setting('nyxcore.probe', true)").scalar() == "on"
        conn.rollback()
        assert conn.exec_driver_sql("SELECT current_setting('nyxcore.probe', true)").scalar() in ("", None)
        conn.commit()
        assert conn.connection.dbapi_connection.info.transaction_status == TRANSACTION_STATUS_IDLE


def test_a_rolled_back_write_is_gone(app, team, admin_engine):
    owner = team.accounts[TenantRole.OWNER]
    with app.app_context(), tenancy.tenant_context(user_id=owner.user_id, tenant_id=team.id):
        db.session.add(Note(tenant_id=team.id, author_id=owner.user_id, title="Never kept", body=""))
        db.session.flush()
        assert db.session.scalar(select(func.count()).select_from(Note)) == 1
        db.session.rollback()
    assert count(admin_engine, "SELECT count(*) FROM notes WHERE title = 'Never kept'") == 0


def test_flask_wtf_checks_only_the_methods_it_protects(anonymous, monkeypatch):
    from nyxcore.extensions import csrf

    checked: list[str] = []
    protect = csrf.protect
    monkeypatch.setattr(csrf, "protect", lambda **kwargs: checked.append("checked") or protect(**kwargs))
    assert anonymous.get("/auth/login").status_code == 200
    assert checked == []  # a GET: Flask-WTF's hook would work out the exemptions and then not check
    assert anonymous.post("/auth/logout").status_code == 400  # a POST without its token is still refused
    assert checked == ["checked"]


@pytest.mark.own_app  # it adds a route
def test_flask_logins_remember_me_hook_still_acts_on_a_session_that_asks(app, anonymous):
    # NyxCore asks for no remember-me cookie; the hook is skipped only while the session is empty.
    wrapped = [getattr(h, "__wrapped__", None) for h in app.after_request_funcs[None]]
    assert login_manager._update_remember_cookie in wrapped

    @app.get("/remember-me")
    def remember_me() -> str:
        session.update(_user_id="someone", _remember="set")
        return "asked"

    assert not any(c.startswith("remember_token=") for c in anonymous.get("/no-such-page").headers.getlist("Set-Cookie"))
    asked = anonymous.get("/remember-me")
    assert any(c.startswith("remember_token=") for c in asked.headers.getlist("Set-Cookie"))


def test_a_page_without_a_cookie_sends_none_and_varies_on_it(anonymous):
    answer = anonymous.get("/no-such-page")
    assert answer.status_code == 404
    assert "Set-Cookie" not in answer.headers
    assert answer.headers.get_all("Vary") == ["Cookie"]


@pytest.mark.own_app  # it adds a route
def test_a_signed_out_request_starts_outside_any_tenant_context(app, anonymous, team):
    @app.get("/context-probe")
    def probe() -> dict[str, object]:
        return {"empty": tenancy.current() == tenancy.EMPTY}

    with tenancy.tenant_context(tenant_id=team.id):  # left over from whatever ran before in this thread
        assert anonymous.get("/context-probe").json == {"empty": True}
    assert anonymous.get("/context-probe").json == {"empty": True}
    assert tenancy.current() is tenancy.EMPTY


@pytest.mark.own_app  # it adds a route
def test_the_request_id_of_the_response_is_the_one_in_the_log(app, anonymous, caplog):
    @app.get("/logs-something")
    def logs_something() -> str:
        logging.getLogger("nyxcore").warning("something happened")
        return "logged"

    with caplog.at_level(logging.INFO, logger="nyxcore"):
        answer = anonymous.get("/logs-something")
        forwarded = anonymous.get("/logs-something", headers={"X-Request-ID": "from-nginx-7"})
    ids = [r.request_id for r in caplog.records if r.getMessage() == "something happened"]
    assert ids == [answer.headers["X-Request-ID"], "from-nginx-7"]
    assert forwarded.headers.get_all("X-Request-ID") == ["from-nginx-7"]
    assert len(answer.headers["X-Request-ID"]) == 16


def test_a_request_context_without_the_wsgi_app_has_one_request_id(app):
    from nyxcore.web import current_request_id

    with app.test_request_context("/"):
        assert current_request_id() == current_request_id() != ""


@pytest.mark.own_app  # it adds a route
def test_csrf_is_still_checked_on_every_unsafe_method_not_only_post(app, anonymous):
    # The wrapped Flask-WTF hook (nyxcore/fixed_cost.py) skips only the methods it would not check.
    @app.route("/unsafe-probe", methods=["GET", "PUT", "PATCH", "DELETE"])
    def unsafe_probe() -> str:
        return "done"

    assert anonymous.get("/unsafe-probe").status_code == 200
    for method in ("PUT", "PATCH", "DELETE"):
        assert anonymous.open("/unsafe-probe", method=method).status_code == 400, method


# --- what every signed-in page pays (issue 15, the layout) ---------------------------------------


def _layout_token(page: str) -> str:
    """The CSRF token the layout's log-out form carries (the templates' csrf_token())."""
    match = re.search(r'action="/auth/logout">\s*<input type="hidden" name="csrf_token" value="([^"]+)"', page)
    assert match, "no log-out form in the layout"
    return match.group(1)


def test_the_layouts_csrf_token_is_flask_wtfs_and_a_bad_or_missing_one_is_still_refused(as_member, make_client):
    from flask_wtf.csrf import validate_csrf

    page = as_member.get("/notes/").get_data(as_text=True)
    token = _layout_token(page)
    assert token == csrf_from(page)  # the layout's and the page form's: one token per request
    with as_member.session_transaction() as stored:
        raw = stored["csrf_token"]
    with as_member.application.test_request_context():
        session["csrf_token"] = raw
        validate_csrf(token)  # Flask-WTF's own check, against this session's value: no exception
    assert as_member.post("/auth/logout", data={"csrf_token": token[:-2] + "xx"}).status_code == 400  # tampered
    assert as_member.post("/auth/logout", data={}).status_code == 400  # missing
    other = make_client()
    other.get("/auth/login")  # a session of its own, with its own secret value
    assert other.post("/auth/logout", data={"csrf_token": token}).status_code == 400  # another session's
    assert as_member.post("/auth/logout", data={"csrf_token": token}).status_code == 302  # the page's own
    assert as_member.get("/notes/").status_code == 302  # and it did log out


def test_the_team_pages_row_forms_carry_the_layouts_token_and_it_changes_a_role(as_admin, team, admin_engine):
    """The member and invitation rows are made in Python (fixed_cost.csrf_token, not a serializer of
    Flask-WTF's per call): every form of the page carries the one token of the request, and it works."""
    as_admin.post_form("/team/invitations", {"emails": "row-token@example.com", "role": "member"})
    page = as_admin.get("/team/").get_data(as_text=True)
    tokens = re.findall(r'name="csrf_token" value="([^"]+)"', page)
    assert len(tokens) > 4 and set(tokens) == {_layout_token(page)}  # role and invitation forms, and the layout's
    viewer = member_id(admin_engine, team.id, team.accounts[TenantRole.VIEWER].user_id)
    changed = as_admin.post(f"/team/members/{viewer}/role", data={"csrf_token": tokens[0], "role": "member"})
    assert changed.status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE id = :m AND role = 'member'", m=viewer) == 1


@pytest.mark.own_app  # a fresh app: its csrf_token() has made no serializer yet
def test_the_csrf_serializer_is_made_once_and_each_session_still_gets_its_own_token(as_member, as_viewer, monkeypatch):
    from flask_wtf import csrf as flask_wtf_csrf

    from nyxcore import fixed_cost

    made: list[str] = []
    ours, theirs = fixed_cost.URLSafeTimedSerializer, flask_wtf_csrf.URLSafeTimedSerializer
    monkeypatch.setattr(fixed_cost, "URLSafeTimedSerializer", lambda *a, **k: made.append("ours") or ours(*a, **k))
    monkeypatch.setattr(
        flask_wtf_csrf, "URLSafeTimedSerializer", lambda *a, **k: made.append("flask-wtf's") or theirs(*a, **k)
    )
    tokens = [_layout_token(as_member.get("/notes/").get_data(as_text=True)) for _ in range(3)]
    other_token = _layout_token(as_viewer.get("/notes/").get_data(as_text=True))
    # A page whose view builds no form (a FlaskForm makes its token as it is built, through Flask-WTF):
    # the layout makes the token, with our serializer, made once for all sessions.
    assert made == ["ours"]
    assert other_token.split(".")[0] != tokens[0].split(".")[0]  # each session signs its own value
    assert len({t.split(".")[0] for t in tokens}) == 1  # one session: the same value, signed afresh


def test_an_unchanged_signed_in_session_sends_no_cookie_and_still_varies_on_it(as_member):
    as_member.get("/notes/")  # the first page may note the active team in the cookie
    page = as_member.get("/notes/")
    assert page.status_code == 200
    assert "Set-Cookie" not in page.headers
    assert page.headers.get_all("Vary") == ["Cookie"]


@pytest.mark.committed
def test_the_magic_link_page_reads_its_invitation_once(app, team, anonymous, admin_engine):
    token = invitation_tokens.new_token()
    inviter = team.accounts[TenantRole.ADMIN].user_id
    insert_invitation(admin_engine, team.id, inviter, "once@example.com", token_hash=invitation_tokens.hash_token(token))
    sent = _statements_sent(app, anonymous, f"/invite/{token}")
    assert len([s for s in sent if re.search(r"\bFROM invitations\b", s)]) == 1, sent
    shown = anonymous.get(f"/invite/{token}")
    assert shown.status_code == 200 and "Join " in shown.get_data(as_text=True)
    assert anonymous.get(f"/invite/{invitation_tokens.new_token()}").status_code == 404  # an unknown link


def test_uuids_read_from_postgresql_are_plain_uuids(app_config):
    """The engine reads `uuid` columns with a caster of its own (nyxcore/database.py): the values are the
    `uuid.UUID`s psycopg2's caster made, equal, hashed and printed alike, in arrays too, and NULL is None."""
    engine = create_engine(app_config["SQLALCHEMY_DATABASE_URI"], **app_config["SQLALCHEMY_ENGINE_OPTIONS"])
    configure_engine(engine)
    known = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    try:
        with engine.connect() as conn:
            casters = conn.connection.dbapi_connection.string_types  # type: ignore[union-attr]
            assert casters[2950] is database._UUID_TYPE and casters[2951] is database._UUID_ARRAY_TYPE  # ours
            one, many, none = conn.execute(
                text("SELECT CAST(:u AS uuid), ARRAY[CAST(:u AS uuid), NULL, gen_random_uuid()], CAST(NULL AS uuid)"),
                {"u": str(known)},
            ).one()
    finally:
        engine.dispose()
    assert type(one) is uuid.UUID
    assert (one, hash(one), str(one), repr(one), one.version, one.is_safe) == (
        known, hash(known), str(known), repr(known), known.version, known.is_safe
    )  # fmt: skip
    assert many[0] == known and many[1] is None and type(many[2]) is uuid.UUID and many[2].version == 4
    assert none is None
    assert {one: "found"}[known] == "found"
