"""The GitHub connection against a real HTTP server on loopback, PostgreSQL with RLS, and the key CLI.

The fake GitHub answers `/user` (200 for the tokens in GOOD_TOKENS, 401 for any other) and
`/user/repos` (paged), and can be switched to rate-limited, slow or redirecting.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine

from nyxcore import create_app
from nyxcore.config import load_config
from nyxcore.crypto import KeyRing, Sealed, generate_key_setting
from nyxcore.extensions import db
from nyxcore.models import GitHubToken, OutboxEmail, Tenant
from nyxcore.roles import TenantRole
from nyxcore.services import key_rotation
from nyxcore.services.github_tokens import UNREADABLE
from tests.helpers import free_port, rows

OCTOCAT_TOKEN = "ghp_" + "Oc7oCat" * 5 + "x"  # 40 characters, the classic shape
HUBOT_TOKEN = "3f2a9c0d1e4b5a6978877665544332211aabbccd"  # no well-known prefix: log redaction cannot help
GOOD_TOKENS = {OCTOCAT_TOKEN: "octocat", HUBOT_TOKEN: "hubot"}
WRONG_TOKEN = "ghp_" + "wrong" * 7 + "zzzzzzz"
REPO_COUNT = 45


@dataclass
class FakeGitHub:
    url: str = ""
    mode: str = "normal"  # normal | rate_limited | too_many | slow | redirect | no_link
    reset_at: int = field(default_factory=lambda: int(time.time()) + 1800)
    requests: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        fake = self.server.fake
        fake.requests.append(
            {
                "path": self.path,
                "authorization": self.headers.get("Authorization", ""),
                "accept": self.headers.get("Accept", ""),
            }
        )
        parts = urlsplit(self.path)
        if parts.path == "/elsewhere":
            return self._send(200, {"login": "mallory"})
        if fake.mode == "slow":
            fake.release.wait(10)
            return self._send(200, {"login": "late"})
        if fake.mode == "redirect":
            return self._send(302, {}, {"Location": f"{fake.url}/elsewhere"})
        if fake.mode == "rate_limited":
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(fake.reset_at)}
            return self._send(403, {"message": "API rate limit exceeded"}, headers)
        if fake.mode == "too_many":
            return self._send(429, {"message": "secondary rate limit"}, {"Retry-After": "120"})
        login = GOOD_TOKENS.get(self.headers.get("Authorization", "").removeprefix("Bearer "))
        if login is None:
            return self._send(401, {"message": "Bad credentials"})
        if parts.path == "/user":
            return self._send(200, {"login": login, "id": 1})
        if parts.path == "/user/repos":
            query = parse_qs(parts.query)
            page, per_page = int(query["page"][0]), int(query["per_page"][0])
            start = (page - 1) * per_page
            repos = [
                {
                    "full_name": f"{login}/repo-{n:02d}",
                    "html_url": f"https://github.example/{login}/repo-{n:02d}",
                    "private": n % 2 == 0,
                    "description": f"Repository number {n}",
                    "language": "Python",
                    "updated_at": "2026-11-30T12:00:00Z",
                }
                for n in range(start + 1, min(start + per_page, REPO_COUNT) + 1)
            ]
            headers = {}
            if fake.mode != "no_link" and start + per_page < REPO_COUNT:
                headers["Link"] = f'<{fake.url}/user/repos?page={page + 1}>; rel="next"'
            return self._send(200, repos, headers)
        return self._send(404, {"message": "Not Found"})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    fake: FakeGitHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left is expected in the slow mode


@pytest.fixture(autouse=True)
def github(app_config: dict[str, Any]) -> Iterator[FakeGitHub]:
    """A fake GitHub on loopback; the app (created after this) talks to it."""
    server = _Server(("127.0.0.1", 0), _Handler)
    fake = FakeGitHub(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.fake = fake
    # A short poll: shutdown() waits for it, and at the default 0.5 s that was most of each test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    app_config["GITHUB_API_URL"] = fake.url
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def connect(client: Any, token: str) -> Any:
    return client.post_form("/github/connect", {"token": token})


def refused(client: Any, token: str) -> str:
    """Connect with a token that fails: a 303 back to the status page (a reload posts nothing), its text."""
    response = connect(client, token)
    assert (response.status_code, response.location) == (303, "/github/")
    page = client.get("/github/")
    assert page.status_code == 200
    return str(page.get_data(as_text=True))


def repo_names(page: str) -> list[str]:
    return re.findall(r'rel="noopener noreferrer">([^<]+)</a>', page)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --- connecting, status, repositories, disconnecting ---------------------------------------------


def test_owner_connects_and_members_see_the_status(team, login_as, github, admin_engine, as_owner):
    owner = as_owner
    response = connect(owner, OCTOCAT_TOKEN)
    assert response.status_code == 302
    assert response.location == "/github/"

    assert github.requests == [
        {"path": "/user", "authorization": f"Bearer {OCTOCAT_TOKEN}", "accept": "application/vnd.github+json"}
    ]
    (row,) = rows(admin_engine, "SELECT * FROM github_tokens")
    assert row.tenant_id == team.id
    assert row.github_login == "octocat"
    assert row.last_four == OCTOCAT_TOKEN[-4:]
    assert row.set_by == team.accounts[TenantRole.OWNER].user_id
    assert row.key_id == "dev"
    (event,) = rows(admin_engine, "SELECT * FROM audit_events WHERE action = 'github.connected'")
    assert event.tenant_id == team.id
    assert event.actor_id == team.accounts[TenantRole.OWNER].user_id
    assert event.details == {"login": "octocat", "last_four": OCTOCAT_TOKEN[-4:], "replaced": False}

    page = owner.get("/github/").get_data(as_text=True)
    assert "GitHub is connected as @octocat." in page
    assert "@octocat" in page and f"<code>{OCTOCAT_TOKEN[-4:]}</code>" in page
    assert "by Olive Owner" in page
    assert 'type="password"' in page and 'name="token"' in page
    assert "Disconnect GitHub" in page

    for role in (TenantRole.ADMIN, TenantRole.MEMBER):
        response = login_as(team.accounts[role], team.id).get("/github/")
        body = response.get_data(as_text=True)
        assert response.status_code == 200
        assert "Connected as <strong>@octocat</strong>" in body
        assert 'name="token"' not in body and "Disconnect GitHub" not in body
        assert "Only team owners can connect or disconnect GitHub." in body


def test_the_status_page_is_accessible_markup(as_owner):
    page = as_owner.get("/github/").get_data(as_text=True)
    assert '<label for="token">Personal access token</label>' in page
    assert 'aria-describedby="token-hint"' in page
    assert 'autocomplete="off"' in page
    assert "style=" not in page and "<script" not in page and "onclick" not in page


def test_replacing_the_token_keeps_one_row_and_records_it(admin_engine, as_owner):
    owner = as_owner
    assert connect(owner, OCTOCAT_TOKEN).status_code == 302
    assert connect(owner, HUBOT_TOKEN).status_code == 302
    (row,) = rows(admin_engine, "SELECT github_login, last_four FROM github_tokens")
    assert tuple(row) == ("hubot", HUBOT_TOKEN[-4:])
    events = rows(
        admin_engine, "SELECT details FROM audit_events WHERE action = 'github.connected' ORDER BY at"
    )
    assert [e.details["replaced"] for e in events] == [False, True]
    assert "Connected as <strong>@hubot</strong>" in owner.get("/github/").get_data(as_text=True)


def test_repositories_are_paged(github, as_owner, as_member):
    as_owner.post_form("/github/connect", {"token": OCTOCAT_TOKEN})
    member = as_member

    first = member.get("/github/repos")
    body = first.get_data(as_text=True)
    assert first.status_code == 200
    assert repo_names(body) == [f"octocat/repo-{n:02d}" for n in range(1, 31)]
    assert 'href="https://github.example/octocat/repo-01"' in body
    assert 'href="/github/repos?page=2" rel="next"' in body
    assert 'rel="prev"' not in body

    second = member.get("/github/repos?page=2").get_data(as_text=True)
    assert repo_names(second) == [f"octocat/repo-{n:02d}" for n in range(31, 46)]
    assert 'href="/github/repos?page=1" rel="prev"' in second
    assert 'rel="next"' not in second

    repo_requests = [r for r in github.requests if r["path"].startswith("/user/repos")]
    assert [parse_qs(urlsplit(r["path"]).query) for r in repo_requests] == [
        {"per_page": ["30"], "page": ["1"], "sort": ["updated"]},
        {"per_page": ["30"], "page": ["2"], "sort": ["updated"]},
    ]
    assert all(r["authorization"] == f"Bearer {OCTOCAT_TOKEN}" for r in repo_requests)
    assert member.get("/github/repos?page=nonsense").status_code == 200  # falls back to page 1


def test_without_a_link_header_a_full_page_means_there_may_be_more(github, as_owner):
    github.mode = "no_link"
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    assert 'rel="next"' in owner.get("/github/repos").get_data(as_text=True)
    assert 'rel="next"' not in owner.get("/github/repos?page=2").get_data(as_text=True)


def test_owner_disconnects(team, admin_engine, as_owner):
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    response = owner.confirm("/github/disconnect")
    assert response.status_code == 302
    assert rows(admin_engine, "SELECT * FROM github_tokens") == []
    (event,) = rows(admin_engine, "SELECT * FROM audit_events WHERE action = 'github.disconnected'")
    assert event.details == {"login": "octocat", "last_four": OCTOCAT_TOKEN[-4:]}
    assert event.actor_id == team.accounts[TenantRole.OWNER].user_id
    page = owner.get("/github/").get_data(as_text=True)
    assert "GitHub is disconnected and the stored token deleted." in page
    assert "GitHub is not connected for this team." in page
    repos = owner.get("/github/repos")
    assert repos.status_code == 404
    assert "GitHub is not connected for this team." in repos.get_data(as_text=True)
    # A second click changes nothing and records nothing.
    assert owner.confirm("/github/disconnect").status_code == 302
    assert len(rows(admin_engine, "SELECT * FROM audit_events WHERE action = 'github.disconnected'")) == 1


# --- who may do what ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        (TenantRole.VIEWER, "get", "/github/", 403),
        (TenantRole.VIEWER, "get", "/github/repos", 403),
        (TenantRole.VIEWER, "post", "/github/connect", 403),
        (TenantRole.VIEWER, "post", "/github/disconnect", 403),
        (TenantRole.MEMBER, "post", "/github/connect", 403),
        (TenantRole.MEMBER, "post", "/github/disconnect", 403),
        (TenantRole.ADMIN, "post", "/github/connect", 403),
        (TenantRole.ADMIN, "post", "/github/disconnect", 403),
        (TenantRole.MEMBER, "get", "/github/", 200),
        (TenantRole.MEMBER, "get", "/github/repos", 200),
        (TenantRole.ADMIN, "get", "/github/repos", 200),
    ],
)
def test_roles(team, login_as, github, admin_engine, role, method, path, status, as_owner):
    as_owner.post_form("/github/connect", {"token": OCTOCAT_TOKEN})
    github.requests.clear()
    client = login_as(team.accounts[role], team.id)
    response = client.get(path) if method == "get" else client.post_form(path, {"token": HUBOT_TOKEN})
    assert response.status_code == status
    if status == 403:
        assert "This needs the" in response.get_data(as_text=True)
        assert all(r["path"] != "/user" for r in github.requests)
    (row,) = rows(admin_engine, "SELECT github_login FROM github_tokens")
    assert row.github_login == "octocat"


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/github/"), ("get", "/github/repos"), ("post", "/github/connect")]
)
def test_anonymous_users_are_sent_to_log_in(client, method, path):
    response = client.get(path) if method == "get" else client.post_form(path, {"token": OCTOCAT_TOKEN})
    assert response.status_code == 302
    assert response.location.startswith("/auth/login")


def test_non_members_never_see_another_teams_connection(
    team, make_user, login_as, github, admin_engine, as_owner
):
    as_owner.post_form("/github/connect", {"token": OCTOCAT_TOKEN})
    github.requests.clear()
    outsider = make_user(name="Oscar Outsider")
    client = login_as(outsider)

    page = client.get("/github/").get_data(as_text=True)
    assert "GitHub is not connected for this team." in page
    assert "octocat" not in page and OCTOCAT_TOKEN[-4:] not in page
    assert client.get("/github/repos").status_code == 404
    assert client.post_form("/teams/switch", {"tenant_id": str(team.id)}).status_code == 404
    # Their own (owner) disconnect touches only their own team.
    assert client.confirm("/github/disconnect").status_code == 302
    assert len(rows(admin_engine, "SELECT * FROM github_tokens")) == 1
    assert github.requests == []


# --- failures save nothing -------------------------------------------------------------------------


def assert_nothing_saved(admin_engine: Engine) -> None:
    assert rows(admin_engine, "SELECT * FROM github_tokens") == []
    assert rows(admin_engine, "SELECT * FROM audit_events WHERE action LIKE 'github.%'") == []


def test_a_token_github_rejects_saves_nothing(admin_engine, as_owner):
    body = refused(as_owner, WRONG_TOKEN)
    assert "GitHub rejected the token." in body
    assert 'id="token-error"' in body
    assert WRONG_TOKEN not in body
    assert_nothing_saved(admin_engine)


def test_a_rejected_replacement_keeps_the_existing_connection(admin_engine, as_owner):
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    assert "GitHub rejected the token." in refused(owner, WRONG_TOKEN)
    (row,) = rows(admin_engine, "SELECT github_login, last_four FROM github_tokens")
    assert tuple(row) == ("octocat", OCTOCAT_TOKEN[-4:])
    assert len(rows(admin_engine, "SELECT * FROM audit_events WHERE action = 'github.connected'")) == 1


@pytest.mark.parametrize(
    "token", ["", "   ", "short", "has a space in the middle of it", "tab\tinside-the-token"]
)
def test_a_malformed_token_is_refused_without_asking_github(github, admin_engine, token, as_owner):
    assert 'id="token-error"' in refused(as_owner, token)
    assert github.requests == []
    assert_nothing_saved(admin_engine)


def test_github_unreachable_gives_a_message_and_saves_nothing(app, admin_engine, as_owner):
    app.config["GITHUB_API_URL"] = closed_port_url()
    body = refused(as_owner, OCTOCAT_TOKEN)
    assert "GitHub could not be reached." in body
    assert_nothing_saved(admin_engine)


def test_a_github_that_does_not_answer_in_time_gives_a_message(app, github, admin_engine, as_owner):
    app.config["GITHUB_TIMEOUT"] = 1
    github.mode = "slow"
    started = time.perf_counter()
    body = refused(as_owner, OCTOCAT_TOKEN)
    assert time.perf_counter() - started < 5
    assert "GitHub could not be reached." in body
    assert_nothing_saved(admin_engine)


def test_rate_limit_says_when_to_try_again_and_saves_nothing(github, admin_engine, as_owner):
    github.mode = "rate_limited"
    body = refused(as_owner, OCTOCAT_TOKEN)
    when = datetime.fromtimestamp(github.reset_at, UTC).strftime("%H:%M")
    assert f"GitHub rate limit reached, try again after {when} UTC." in body
    assert_nothing_saved(admin_engine)


def test_rate_limit_on_the_repositories_page(github, as_owner):
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    github.mode = "too_many"
    response = owner.get("/github/repos")
    assert response.status_code == 502
    assert re.search(
        r"GitHub rate limit reached, try again after \d\d:\d\d UTC\.", response.get_data(as_text=True)
    )


def test_a_token_revoked_at_github_is_reported_on_the_repositories_page(admin_engine, as_owner):
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    GOOD_TOKENS.pop(OCTOCAT_TOKEN)
    try:
        response = owner.get("/github/repos")
    finally:
        GOOD_TOKENS[OCTOCAT_TOKEN] = "octocat"
    assert response.status_code == 502
    assert "GitHub rejected the token" in response.get_data(as_text=True)


def test_redirects_are_not_followed_so_the_token_goes_nowhere_else(github, admin_engine, as_owner):
    github.mode = "redirect"
    body = refused(as_owner, OCTOCAT_TOKEN)
    assert "redirect" in body
    assert github.paths() == ["/user"]
    assert_nothing_saved(admin_engine)


# --- the token is kept secret ----------------------------------------------------------------------


def every_stored_value(engine: Engine) -> Iterator[tuple[str, str, Any]]:
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        ).scalars()
        for table in list(tables):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')).mappings():
                for column, value in row.items():
                    yield table, column, value


@pytest.mark.parametrize("token", [OCTOCAT_TOKEN, HUBOT_TOKEN])
def test_the_token_is_in_no_column_no_page_no_cookie_and_no_log(
    admin_engine, caplog, token, as_owner, as_member
):
    caplog.set_level(logging.DEBUG)
    owner = as_owner
    responses = [
        connect(owner, token),
        owner.get("/github/"),
        owner.get("/github/repos"),
        owner.get("/github/repos?page=2"),
        connect(owner, WRONG_TOKEN),
        as_member.get("/github/"),
    ]
    assert rows(admin_engine, "SELECT count(*) FROM github_tokens")[0][0] == 1

    secret = token.encode()
    checked = 0
    for table, column, value in every_stored_value(admin_engine):
        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert secret not in raw, f"the token is in {table}.{column}"
        assert WRONG_TOKEN.encode() not in raw, f"the rejected token is in {table}.{column}"
        checked += 1
    assert checked > 20

    for response in responses:
        assert token not in response.get_data(as_text=True)
        assert all(token not in value for value in response.headers.values())
    with owner.session_transaction() as session:
        assert token not in json.dumps(dict(session), default=str)

    assert caplog.records, "expected some log lines to check"
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in str(record.args)
        assert WRONG_TOKEN not in record.getMessage()
    assert token not in caplog.text


# --- stored ciphertexts that do not open ----------------------------------------------------------


def test_ciphertexts_swapped_between_teams_do_not_decrypt_and_are_reported(
    team, make_user, login_as, github, admin_engine, as_owner
):
    owner_a = as_owner
    other = make_user(name="Bea Other")
    owner_b = login_as(other, other.team_id)
    connect(owner_a, OCTOCAT_TOKEN)
    connect(owner_b, HUBOT_TOKEN)
    with admin_engine.begin() as conn:
        a, b = (
            conn.execute(
                text("SELECT key_id, nonce, ciphertext FROM github_tokens WHERE tenant_id = :t"), {"t": t}
            ).one()
            for t in (team.id, other.team_id)
        )
        for tenant_id, sealed in ((team.id, b), (other.team_id, a)):
            conn.execute(
                text(
                    "UPDATE github_tokens SET key_id = :k, nonce = :n, ciphertext = :c WHERE tenant_id = :t"
                ),
                {"k": sealed.key_id, "n": sealed.nonce, "c": sealed.ciphertext, "t": tenant_id},
            )
    github.requests.clear()

    for client, login in ((owner_a, "octocat"), (owner_b, "hubot")):
        status = client.get("/github/")
        assert status.status_code == 200
        assert UNREADABLE in status.get_data(as_text=True)
        assert f"@{login}" in status.get_data(as_text=True)
        repos = client.get("/github/repos")
        assert repos.status_code == 409
        assert UNREADABLE in repos.get_data(as_text=True)
    assert github.requests == []  # neither team's token was sent anywhere

    # Reconnecting repairs it.
    assert connect(owner_a, OCTOCAT_TOKEN).status_code == 302
    assert owner_a.get("/github/repos").status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE github_tokens SET ciphertext = set_byte(ciphertext, 3, get_byte(ciphertext, 3) # 1)",
        "UPDATE github_tokens SET nonce = set_byte(nonce, 0, get_byte(nonce, 0) # 1)",
        "UPDATE github_tokens SET ciphertext = substring(ciphertext from 1 for 10)",
        "UPDATE github_tokens SET nonce = '\\x00'::bytea",
        "UPDATE github_tokens SET key_id = 'retired'",
    ],
)
def test_tampered_rows_fail_cleanly(github, admin_engine, caplog, tamper, as_owner):
    owner = as_owner
    connect(owner, OCTOCAT_TOKEN)
    with admin_engine.begin() as conn:
        conn.execute(text(tamper))
    github.requests.clear()
    status = owner.get("/github/")
    assert status.status_code == 200
    assert UNREADABLE in status.get_data(as_text=True)
    repos = owner.get("/github/repos")
    assert repos.status_code == 409
    assert UNREADABLE in repos.get_data(as_text=True)
    assert github.requests == []
    assert any("cannot be decrypted" in r.getMessage() for r in caplog.records)


# --- key rotation ----------------------------------------------------------------------------------


def seal_rows(
    ring: KeyRing, tokens: dict[uuid.UUID, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tenants, github_tokens = [], []
    for n, (tenant_id, token) in enumerate(tokens.items()):
        sealed = ring.encrypt(token.encode(), f"github-token:{tenant_id}")
        tenants.append({"id": tenant_id, "name": f"Team {n}", "slug": f"team-{n}-{tenant_id.hex[:8]}"})
        github_tokens.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant_id,
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "last_four": token[-4:],
                "github_login": f"user{n}",
            }
        )
    return tenants, github_tokens


def outbox_row(ring: KeyRing, body: str, *, sent: bool = False) -> dict[str, Any]:
    outbox_id = uuid.uuid4()
    # Every row has the same keys: an executemany insert takes its columns from the first one.
    row: dict[str, Any] = {
        "id": outbox_id,
        "to_address": "a@example.com",
        "subject": "Hello",
        "sent_at": None,
    }
    if sent:
        return {**row, "sent_at": datetime.now(UTC), "key_id": None, "nonce": None, "body_ciphertext": None}
    sealed = ring.encrypt(body.encode(), f"outbox:{outbox_id}")
    return {**row, "key_id": sealed.key_id, "nonce": sealed.nonce, "body_ciphertext": sealed.ciphertext}


def store(engine: Engine, tenants: list[Any], github_tokens: list[Any], outbox: list[Any]) -> None:
    with engine.begin() as conn:
        if tenants:
            conn.execute(insert(Tenant.__table__), tenants)
        if github_tokens:
            conn.execute(insert(GitHubToken.__table__), github_tokens)
        if outbox:
            conn.execute(insert(OutboxEmail.__table__), outbox)


@pytest.fixture
def keys() -> dict[str, str]:
    return {"old": generate_key_setting("old"), "new": generate_key_setting("new")}


def test_rotation_of_1000_tokens_under_the_old_key(request, app_config, admin_engine, keys):
    old, new_only = KeyRing.parse(keys["old"]), KeyRing.parse(keys["new"])
    tokens = {uuid.uuid4(): f"ghp_{uuid.uuid4().hex}{n:04d}" for n in range(1000)}
    tenants, github_tokens = seal_rows(old, tokens)
    outbox = [outbox_row(old, f"body {n}") for n in range(3)]
    outbox += [outbox_row(new_only, "already new"), outbox_row(old, "", sent=True)]
    store(admin_engine, tenants, github_tokens, outbox)
    app_config["NYXCORE_ENCRYPTION_KEYS"] = f"{keys['new']},{keys['old']}"
    app = request.getfixturevalue("app")
    runner = app.test_cli_runner()

    started = time.perf_counter()
    result = runner.invoke(args=["nyxcore", "keys", "rotate"])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1000 GitHub tokens and 3 outbox emails; 1 already under primary key" in result.stdout
    print(f"\nrotation of 1,000 GitHub tokens took {elapsed:.2f}s")

    stored = rows(admin_engine, "SELECT tenant_id, key_id, nonce, ciphertext FROM github_tokens")
    assert len(stored) == 1000
    assert {row.key_id for row in stored} == {"new"}
    for row in stored:
        sealed = Sealed(row.key_id, bytes(row.nonce), bytes(row.ciphertext))
        assert new_only.decrypt(sealed, f"github-token:{row.tenant_id}").decode() == tokens[row.tenant_id]
    for row in rows(admin_engine, "SELECT * FROM outbox_emails WHERE sent_at IS NULL"):
        sealed = Sealed(row.key_id, bytes(row.nonce), bytes(row.body_ciphertext))
        assert new_only.decrypt(sealed, f"outbox:{row.id}").decode().startswith(("body ", "already new"))
    (sent,) = rows(admin_engine, "SELECT * FROM outbox_emails WHERE sent_at IS NOT NULL")
    assert sent.body_ciphertext is None and sent.key_id is None

    snapshot = rows(admin_engine, "SELECT id, nonce, ciphertext FROM github_tokens ORDER BY id")
    again = runner.invoke(args=["nyxcore", "keys", "rotate"])
    assert again.exit_code == 0, again.output
    assert "re-encrypted 0 GitHub tokens and 0 outbox emails; 1004 already under primary key" in again.stdout
    assert rows(admin_engine, "SELECT id, nonce, ciphertext FROM github_tokens ORDER BY id") == snapshot


def test_an_interrupted_rotation_continues_where_it_stopped(
    request, app_config, admin_engine, keys, monkeypatch
):
    old = KeyRing.parse(keys["old"])
    tokens = {uuid.uuid4(): f"ghp_{uuid.uuid4().hex}" for _ in range(50)}
    store(admin_engine, *seal_rows(old, tokens), [])
    app_config["NYXCORE_ENCRYPTION_KEYS"] = f"{keys['new']},{keys['old']}"
    runner = request.getfixturevalue("app").test_cli_runner()

    real = key_rotation.reseal_github_token
    calls = iter(range(1, 1000))

    def crash_on_the_25th(ring: KeyRing, tenant_id: uuid.UUID) -> bool:
        if next(calls) == 25:
            raise ConnectionError("the database went away")
        return real(ring, tenant_id)

    monkeypatch.setattr(key_rotation, "reseal_github_token", crash_on_the_25th)
    crashed = runner.invoke(args=["nyxcore", "keys", "rotate", "--batch-size", "10"])
    assert isinstance(crashed.exception, ConnectionError)
    counts = dict(rows(admin_engine, "SELECT key_id, count(*) FROM github_tokens GROUP BY key_id"))
    assert counts == {"new": 20, "old": 30}  # two whole batches committed, the third rolled back

    monkeypatch.setattr(key_rotation, "reseal_github_token", real)
    resumed = runner.invoke(args=["nyxcore", "keys", "rotate", "--batch-size", "10"])
    assert resumed.exit_code == 0, resumed.output
    assert "re-encrypted 30 GitHub tokens and 0 outbox emails; 20 already under primary key" in resumed.stdout
    assert dict(rows(admin_engine, "SELECT key_id, count(*) FROM github_tokens GROUP BY key_id")) == {
        "new": 50
    }


def test_rows_the_ring_cannot_open_are_reported_and_the_rest_rotated(request, app_config, admin_engine, keys):
    old = KeyRing.parse(keys["old"])
    lost = KeyRing.parse(generate_key_setting("lost"))
    good = {uuid.uuid4(): f"ghp_{uuid.uuid4().hex}" for _ in range(3)}
    bad_tenant = uuid.uuid4()
    tenants, github_tokens = seal_rows(old, good)
    more_tenants, more_tokens = seal_rows(lost, {bad_tenant: f"ghp_{uuid.uuid4().hex}"})
    bad_outbox = outbox_row(lost, "unreadable")
    store(admin_engine, tenants + more_tenants, github_tokens + more_tokens, [bad_outbox])
    app_config["NYXCORE_ENCRYPTION_KEYS"] = f"{keys['new']},{keys['old']}"
    runner = request.getfixturevalue("app").test_cli_runner()

    result = runner.invoke(args=["nyxcore", "keys", "rotate"])
    assert result.exit_code == 1
    assert "re-encrypted 3 GitHub tokens and 0 outbox emails; 0 already under primary key" in result.stdout
    assert f"cannot decrypt the GitHub token of team {bad_tenant}" in result.stderr
    assert f"cannot decrypt the outbox email {bad_outbox['id']}" in result.stderr
    assert "2 stored secret(s) could not be decrypted" in result.stderr
    counts = dict(rows(admin_engine, "SELECT key_id, count(*) FROM github_tokens GROUP BY key_id"))
    assert counts == {"new": 3, "lost": 1}


def test_rotation_on_sqlite(tmp_path, keys):
    """SQLite has no RLS and no SECURITY DEFINER function: the command lists rows through the ORM."""
    from flask_migrate import upgrade

    url = f"sqlite:///{tmp_path}/dev.db"
    config = load_config(
        {
            "NYXCORE_ENV": "development",
            "DATABASE_URL": url,
            "NYXCORE_ENCRYPTION_KEYS": f"{keys['new']},{keys['old']}",
        },
        instance_path=str(tmp_path),
    )
    app = create_app(config)
    old, new_only = KeyRing.parse(keys["old"]), KeyRing.parse(keys["new"])
    tokens = {uuid.uuid4(): f"ghp_{uuid.uuid4().hex}" for _ in range(5)}
    try:
        with app.app_context():
            upgrade()
            store(db.engine, *seal_rows(old, tokens), [outbox_row(old, "body")])
        runner = app.test_cli_runner()
        result = runner.invoke(args=["nyxcore", "keys", "rotate", "--batch-size", "2"])
        assert result.exit_code == 0, result.output
        assert (
            "re-encrypted 5 GitHub tokens and 1 outbox emails; 0 already under primary key" in result.stdout
        )
        again = runner.invoke(args=["nyxcore", "keys", "rotate"])
        assert "re-encrypted 0 GitHub tokens and 0 outbox emails; 6 already under primary key" in again.stdout
        with app.app_context():
            stored = rows(db.engine, "SELECT tenant_id, key_id, nonce, ciphertext FROM github_tokens")
            for row in stored:
                tenant_id = uuid.UUID(str(row.tenant_id))
                sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
                assert new_only.decrypt(sealed, f"github-token:{tenant_id}").decode() == tokens[tenant_id]
            assert len(stored) == 5
    finally:
        with app.app_context():
            db.engine.dispose()


def test_the_listing_function_reveals_team_ids_and_nothing_else(database, admin_engine, keys):
    old = KeyRing.parse(keys["old"])
    tokens = {uuid.uuid4(): f"ghp_{uuid.uuid4().hex}" for _ in range(3)}
    store(admin_engine, *seal_rows(old, tokens), [])
    for url in (database.app_url, database.owner_url):
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                assert conn.execute(text("SELECT count(*) FROM github_tokens")).scalar_one() == 0
                conn.execute(text("SELECT set_config('app.key_rotation_scan', 'on', true)"))
                if url == database.app_url:  # the scan policy is the owner's alone
                    assert conn.execute(text("SELECT count(*) FROM github_tokens")).scalar_one() == 0
            with engine.begin() as conn:
                listed = conn.execute(
                    text("SELECT nyxcore_tenants_with_stale_github_tokens('new')")
                ).scalars()
                assert sorted(listed) == sorted(tokens)
                # The function clears the scan flag before returning: the rows stay hidden afterwards.
                assert (
                    conn.execute(text("SELECT current_setting('app.key_rotation_scan', true)")).scalar() == ""
                )
                assert conn.execute(text("SELECT count(*) FROM github_tokens")).scalar_one() == 0
                assert conn.execute(text("SELECT nyxcore_count_github_tokens_under_key('old')")).scalar() == 3
                assert (
                    list(conn.execute(text("SELECT nyxcore_tenants_with_stale_github_tokens('old')"))) == []
                )
        finally:
            engine.dispose()
    functions = rows(
        admin_engine,
        "SELECT proname, prosecdef, proconfig, proacl::text[] AS acl, pg_get_userbyid(proowner) AS owner "
        "FROM pg_proc WHERE proname LIKE 'nyxcore\\_%' AND prosecdef",
    )
    # Every way round row-level security is listed here: a new one needs a review (and a line here).
    assert {f.proname for f in functions} == {
        "nyxcore_tenants_with_stale_github_tokens",
        "nyxcore_count_github_tokens_under_key",
        "nyxcore_password_setting",
        "nyxcore_login",
        "nyxcore_unsent_outbox",
        "nyxcore_stale_outbox",
        "nyxcore_count_unsent_outbox",
        "nyxcore_users_with_stale_two_factor",  # user ids only, for key rotation (migration 0006)
        "nyxcore_issue_password_reset",  # a reset link for an anonymous request: an id or NULL
        "nyxcore_invitations_due_reminder",  # invitation, team and inviter ids only (migration 0010)
        "nyxcore_joinable_teams",  # teams the acting user may join by domain: id, name, mode, role (0011)
        "nyxcore_memberships_to_warn",  # (team id, membership id) pairs only, for beat (migration 0012)
        "nyxcore_memberships_to_end",  # the same
        "nyxcore_member_matches",  # member ids of the context's team whose name or address matches (0017)
        "nyxcore_member_window",  # the same, among the next few hundred members in join order (0017)
        "nyxcore_member_page",  # the member list's columns, for the context's team named by the caller (0018)
    }
    for function in functions:
        assert function.prosecdef
        assert function.owner == database.owner_role
        assert function.proconfig == ["search_path=pg_catalog, pg_temp"]
        assert not any(entry.startswith("=") for entry in function.acl), "PUBLIC may execute it"
        assert any(entry.startswith(f"{database.app_role}=X/") for entry in function.acl)


def test_keys_generate_prints_an_entry_and_a_hint(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["nyxcore", "keys", "generate", "--key-id", "k2027"])
    assert result.exit_code == 0, result.output
    entry = result.stdout.strip()
    assert KeyRing.parse(entry).primary_id == "k2027"
    assert "first in NYXCORE_ENCRYPTION_KEYS" in result.stderr
    assert entry not in result.stderr
    default = runner.invoke(args=["nyxcore", "keys", "generate"])
    assert re.fullmatch(r"k\d{8}:[A-Za-z0-9+/]{43}=", default.stdout.strip())
    bad = runner.invoke(args=["nyxcore", "keys", "generate", "--key-id", "not valid"])
    assert bad.exit_code == 2
    assert "key ids are 1-32 letters" in bad.output
