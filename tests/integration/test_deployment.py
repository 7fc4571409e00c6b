"""The production deployment: nginx.conf, gunicorn.conf.py, the Dockerfile and docker-compose.yml.

nginx (this repository's nginx.conf, with its ports and paths rewritten to a temporary folder and
free loopback ports) runs in front of a real gunicorn (gunicorn.conf.py, NYXCORE_ENV=production,
the app role of the test database, Redis), and the tests talk to it over TLS like a browser.
No Docker engine is needed: the Dockerfile is linted with hadolint and the compose file is read.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import ipaddress
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nyxcore import create_app
from nyxcore.config import load_config
from nyxcore.dbroles import UnsafeAppRoleError, assert_app_role_safe, role_problems
from tests.conftest import ADMIN_URL, PASSWORD, REDIS_URL, csrf_from
from tests.helpers import free_port
from tests.live import BIN, ROOT, Browser, LiveServers, failed_logins, plain_status, production_environment

if TYPE_CHECKING:  # imported by name, pytest would try to collect it as a test class
    from tests.conftest import TestDatabase

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APP_SERVICES = ("web", "worker", "beat")
LONG_RUNNING = ("db", "redis", "web", "worker", "beat", "nginx")


# ---------------------------------------------------------------------------------------------------
# Helpers: a throwaway certificate, nginx.conf rewritten for a test, a small HTTPS "browser".


def make_certificate(directory: Path) -> None:
    """A self-signed certificate for localhost/127.0.0.1, as fullchain.pem and privkey.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass(frozen=True)
class NginxFiles:
    prefix: Path
    conf: Path
    access_log: Path
    error_log: Path
    startup_log: Path


def write_nginx_config(prefix: Path, *, upstream_port: int, http_port: int, https_port: int) -> NginxFiles:
    """nginx.conf as compose mounts it, with the upstream, ports and paths moved into `prefix`."""
    for sub in ("certs", "logs", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    make_certificate(prefix / "certs")
    temp = prefix / "temp"
    replacements = {
        "server web:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/nginx/certs/": f"{prefix}/certs/",
        "/var/log/nginx/": f"{prefix}/logs/",
        "/var/run/nginx.pid": f"{prefix}/nginx.pid",
        "/srv/nyxcore/static/": f"{ROOT}/nyxcore/static/",
        # The official image has an `nginx` user; here the workers run as whoever runs the test.
        "user nginx;": "user root;" if os.geteuid() == 0 else "",
        "http {": (
            "http {\n"
            f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
            f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n"
            f"    scgi_temp_path {temp}/scgi;"
        ),
    }
    config = (ROOT / "nginx.conf").read_text()
    for old, new in replacements.items():
        assert old in config, f"nginx.conf no longer contains {old!r}; update this test's rewrite"
        config = config.replace(old, new)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    return NginxFiles(
        prefix=prefix,
        conf=conf,
        access_log=prefix / "logs" / "access.log",
        error_log=prefix / "logs" / "error.log",
        startup_log=prefix / "logs" / "startup.log",
    )


def nginx_command(files: NginxFiles, *extra: str) -> list[str]:
    # -e: the log nginx writes to before it has read the configuration (Debian's default is stderr).
    return [NGINX, "-p", str(files.prefix), "-e", str(files.startup_log), "-c", str(files.conf), *extra]


def read_until(path: Path, needle: str, timeout: float = 10) -> str:
    """The file's text once it contains `needle` (another process writes it), or as it is at timeout."""
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if needle in content:
            break
        time.sleep(0.05)
    return content


# ---------------------------------------------------------------------------------------------------
# The running stack: gunicorn behind nginx, started once for this module.


@dataclass(frozen=True)
class Stack:
    https: str
    http_port: int
    https_port: int
    upstream_port: int  # gunicorn itself, on 127.0.0.1
    nginx: NginxFiles
    gunicorn_log: Path
    ratelimit_prefix: str


@pytest.fixture(scope="module")
def stack(database: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = tmp_path_factory.mktemp("deployment")
    upstream_port, http_port, https_port = free_port(), free_port(), free_port()
    ratelimit_prefix = f"nyxcore-test-{uuid.uuid4().hex[:12]}"
    environment = production_environment(
        database.app_url,
        NYXCORE_APP_ROLE=database.app_role,
        PUBLIC_URL=f"https://127.0.0.1:{https_port}",
        RATELIMIT_ENABLED="true",
        RATELIMIT_LOGIN="5 per minute",
        RATELIMIT_KEY_PREFIX=ratelimit_prefix,
        GUNICORN_BIND=f"127.0.0.1:{upstream_port}",
    )
    files = write_nginx_config(
        prefix, upstream_port=upstream_port, http_port=http_port, https_port=https_port
    )
    try:
        with LiveServers(prefix) as servers:
            gunicorn = servers.spawn(
                "gunicorn", [str(BIN / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"], env=environment
            )
            servers.wait_until(
                lambda: plain_status(upstream_port, "/api/v1/health") == 200, "gunicorn", watch=[gunicorn]
            )
            nginx = servers.spawn("nginx", nginx_command(files, "-g", "daemon off;"), env=os.environ)
            servers.wait_until(
                lambda: plain_status(https_port, "/api/v1/health", tls=True) == 200, "nginx", watch=[nginx]
            )
            yield Stack(
                https=f"https://127.0.0.1:{https_port}",
                http_port=http_port,
                https_port=https_port,
                upstream_port=upstream_port,
                nginx=files,
                gunicorn_log=gunicorn.log_path,
                ratelimit_prefix=ratelimit_prefix,
            )
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"*{ratelimit_prefix}*"):
                client.delete(key)
        finally:
            client.close()


# ---------------------------------------------------------------------------------------------------
# nginx.conf


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    files = write_nginx_config(
        tmp_path, upstream_port=free_port(), http_port=free_port(), https_port=free_port()
    )
    result = subprocess.run(nginx_command(files, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_plain_http_redirects_to_https_except_the_health_check(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=5)
    try:
        conn.request("GET", "/team/?tab=members")
        response = conn.getresponse()
        response.read()
        assert response.status == 301
        assert response.getheader("Location") == "https://127.0.0.1/team/?tab=members"
    finally:
        conn.close()
    assert plain_status(stack.http_port, "/api/v1/health") == 200


def test_health_answers_through_nginx_over_https(stack: Stack) -> None:
    reply = Browser(stack.https).get("/api/v1/health")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    assert re.sub(r"\s", "", reply.body) == '{"database":"ok","redis":"ok","status":"ok"}'


def test_sign_up_through_nginx_reaches_check_inbox_and_the_app_sees_https(stack: Stack) -> None:
    browser = Browser(stack.https)
    page = browser.get("/auth/signup")
    assert page.status == 200
    form = {
        "csrf_token": csrf_from(page.body),
        "name": "Dee Ploy",
        "email": f"deploy-{uuid.uuid4().hex[:8]}@example.com",
        "password": PASSWORD,
    }

    # Flask-WTF demands a same-origin Referer only on requests it sees as HTTPS: this 400 shows the
    # app took the scheme from nginx's X-Forwarded-Proto (gunicorn itself spoke plain HTTP).
    without_referer = browser.post("/auth/signup", form)
    assert without_referer.status == 400
    assert "expired or was not sent from this site" in without_referer.body

    # ... and the origin it compares the Referer with carries nginx's port: Host reached it intact.
    created = browser.post_from_page("/auth/signup", form)
    assert created.status == 303, created.body
    assert created.headers["Location"] in ("/auth/check-inbox", f"{stack.https}/auth/check-inbox")
    session_cookie = next(c for c in created.headers.get_all("Set-Cookie", []) if c.startswith("session="))
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie

    # Sign-up mails a link to finish it (no log in here: this stack's log-in limit is another test's).
    inbox = browser.get("/auth/check-inbox")
    assert inbox.status == 200
    assert f"We sent a link to <strong>{form['email']}</strong>" in inbox.body
    # The request id nginx made ($request_id, 32 hex digits) is the one the app answers with.
    assert re.fullmatch(r"[0-9a-f]{32}", inbox.headers["X-Request-ID"] or "")


SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
    "Strict-Transport-Security",
)


@pytest.mark.parametrize(("path", "served_by"), [("/auth/login", "app"), ("/static/nyxcore.css", "nginx")])
def test_security_headers_are_sent_once_on_pages_and_static_files(
    stack: Stack, path: str, served_by: str
) -> None:
    reply = Browser(stack.https).get(path)
    assert reply.status == 200
    policies = reply.headers.get_all("Content-Security-Policy", [])
    assert len(policies) == 1, policies
    assert "unsafe-inline" not in policies[0]
    assert "frame-ancestors 'none'" in policies[0]
    for name in SECURITY_HEADERS:
        assert len(reply.headers.get_all(name, [])) == 1, (name, reply.headers.get_all(name))
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["X-Frame-Options"] == "DENY"
    # The app stamps every response it makes with X-Request-ID; nginx serves /static/ itself.
    assert (reply.headers["X-Request-ID"] is not None) == (served_by == "app")
    if served_by == "nginx":
        assert reply.body == (ROOT / "nyxcore" / "static" / "nyxcore.css").read_text()


def test_nginx_refuses_a_body_over_the_size_limit(stack: Stack) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=5, context=context)
    try:
        # Only the announced length matters: nginx answers before reading a byte of the body.
        conn.putrequest("POST", "/notes/")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", str(5 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        assert response.status == 413
    finally:
        conn.close()


def test_repeated_failed_logins_get_429_from_the_app_whatever_x_forwarded_for_claims(stack: Stack) -> None:
    browser = Browser(stack.https)
    token = csrf_from(browser.get("/auth/login").body)
    replies = [
        browser.post_from_page(
            "/auth/login",
            {"csrf_token": token, "email": "nobody@example.com", "password": "not the password"},
            # A client rotating its claimed address: nginx replaces the header with the real one.
            **{"X-Forwarded-For": f"203.0.113.{attempt}"},
        )
        for attempt in range(7)
    ]
    assert [r.status for r in replies] == [400] * 5 + [429] * 2
    assert "Invalid email or password." in replies[0].body
    limited = replies[-1]
    # Flask-Limiter's answer (it adds the X-RateLimit-* headers), not nginx's coarser limit.
    assert limited.headers["X-RateLimit-Limit"] == "5"
    assert limited.headers["Retry-After"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert any(True for _ in client.scan_iter(match=f"*{stack.ratelimit_prefix}*"))
    finally:
        client.close()


def test_forwarded_headers_from_a_peer_that_is_not_a_trusted_proxy_are_ignored(stack: Stack) -> None:
    # Straight to gunicorn from 127.0.0.2 (TRUSTED_PROXIES is 127.0.0.1, nginx's address): a rotating
    # X-Forwarded-For must not make one client look like many to the per-client login limit.
    assert failed_logins([stack.upstream_port], source="127.0.0.2", attempts=7) == [400] * 5 + [429] * 2


def test_a_chunked_body_over_the_limit_is_refused_with_413_before_it_is_read(stack: Stack) -> None:
    # No Content-Length to refuse up front: the app stops reading at MAX_CONTENT_LENGTH (1 MiB).
    conn = http.client.HTTPConnection("127.0.0.1", stack.upstream_port, timeout=10)
    chunk = b"email=" + b"a" * (64 * 1024 - 6)
    try:
        conn.putrequest("POST", "/auth/login")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(48):  # 3 MiB, if the server lets us send that much
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.status == 413
    assert "larger than this server accepts" in body
    assert plain_status(stack.upstream_port, "/api/v1/health") == 200  # the worker lives on


def test_magic_link_tokens_never_reach_the_access_logs(stack: Stack) -> None:
    token = secrets.token_urlsafe(32)
    browser = Browser(stack.https)
    browser.get(f"/invite/{token}")
    browser.get(f"/auth/signup?next=/invite/{token}&email=new%40example.com")
    browser.get(f"/auth/login?next=%2Finvite%2F{token}")
    for account_link in ("/auth/reset/", "/auth/verify/", "/account/email/confirm/"):
        browser.get(f"{account_link}{token}")
    browser.get("/auth/login", headers={"Referer": f"{stack.https}/invite/{token}"})
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=5)
    try:
        conn.request("GET", f"/invite/{token}")
        conn.getresponse().read()
    finally:
        conn.close()
    marker = uuid.uuid4().hex  # the last request: once both logs show it, they hold all of the above
    browser.get(f"/auth/login?marker={marker}")

    nginx_log = read_until(stack.nginx.access_log, marker)
    assert "/invite/[redacted]" in nginx_log
    assert "/auth/signup?[redacted]" in nginx_log
    gunicorn_log = read_until(stack.gunicorn_log, marker)
    assert "GET /invite/[redacted]" in gunicorn_log
    assert "next=/invite/[redacted]" in gunicorn_log
    assert "%2Finvite%2F[redacted]" in gunicorn_log
    for account_link in ("/auth/reset/", "/auth/verify/", "/account/email/confirm/"):
        assert f"{account_link}[redacted]" in nginx_log and f"GET {account_link}[redacted]" in gunicorn_log
    for log in (nginx_log, gunicorn_log, stack.nginx.error_log.read_text()):
        assert token not in log


def test_nginx_rate_limits_magic_links_itself(stack: Stack) -> None:
    token = secrets.token_urlsafe(32)
    browser = Browser(stack.https)
    replies = [browser.get(f"/invite/{token}") for _ in range(40)]
    from_nginx = [r for r in replies if r.status == 429 and r.headers["X-Request-ID"] is None]
    assert from_nginx, [r.status for r in replies]
    # nginx's own answers get the security headers too, and the rejections log no token.
    assert from_nginx[0].headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in from_nginx[0].headers["Content-Security-Policy"]
    assert token not in stack.nginx.error_log.read_text()


# ---------------------------------------------------------------------------------------------------
# The app database role: production refuses one that can bypass row-level security.


@pytest.fixture
def rls_bypass_role(database: TestDatabase) -> Iterator[str]:
    """A login role with BYPASSRLS (otherwise like the app role); dropped afterwards."""
    name = f"nyxcore_bypass_{uuid.uuid4().hex[:8]}"
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f"CREATE ROLE {name} LOGIN NOSUPERUSER BYPASSRLS"))
        yield name
    finally:
        with server.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": name}
            )
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        server.dispose()


def as_user(url: str, user: str) -> str:
    return make_url(url).set(username=user, password=None).render_as_string(hide_password=False)


def production_app(database_url: str) -> Any:
    return create_app(load_config(production_environment(database_url)))


def test_production_accepts_the_app_role(database: TestDatabase) -> None:
    assert_app_role_safe(production_app(database.app_url))
    engine = create_engine(database.admin_url)
    try:
        with engine.connect() as conn:
            assert role_problems(conn, database.app_role) == []
    finally:
        engine.dispose()


def test_creating_a_production_app_refuses_a_role_with_bypassrls(
    database: TestDatabase, rls_bypass_role: str
) -> None:
    # create_app itself checks: `gunicorn wsgi:app` without -c and Celery never read gunicorn.conf.py.
    with pytest.raises(UnsafeAppRoleError, match=f"role {rls_bypass_role} has BYPASSRLS"):
        production_app(as_user(database.app_url, rls_bypass_role))


def test_production_refuses_to_start_when_it_cannot_check_the_role(database: TestDatabase) -> None:
    unreachable = (
        make_url(database.app_url).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    )
    with pytest.raises(UnsafeAppRoleError, match="cannot check the app database role"):
        production_app(unreachable)


@pytest.mark.parametrize("entry_point", ["gunicorn", "celery"])
def test_a_server_started_by_hand_with_no_environment_refuses_to_run(entry_point: str) -> None:
    # NYXCORE_ENV unset means production, which refuses the published development secrets.
    command = {
        # -c /dev/null: not even gunicorn.conf.py's start-up hook (gunicorn reads ./gunicorn.conf.py
        # by default); the app refuses when a worker builds it.
        "gunicorn": [str(BIN / "gunicorn"), "wsgi:app", "-c", "/dev/null", "--bind", f"127.0.0.1:{free_port()}"],
        "celery": [str(BIN / "celery"), "-A", "worker", "inspect", "ping"],
    }[entry_point]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "refusing to start in production: SECRET_KEY must be set" in output


def test_a_role_that_can_set_role_to_a_bypassing_role_is_a_problem(
    database: TestDatabase, rls_bypass_role: str
) -> None:
    member = f"nyxcore_member_{uuid.uuid4().hex[:8]}"
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(
                text(f"CREATE ROLE {member} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE {rls_bypass_role}")
            )
            problems = role_problems(conn, member)
        assert problems == [
            f"role {member} is a member of {rls_bypass_role} (BYPASSRLS) and can SET ROLE to it"
        ]
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {member}"))
        server.dispose()


def test_gunicorn_refuses_to_start_with_a_role_that_bypasses_rls(
    database: TestDatabase, rls_bypass_role: str
) -> None:
    environment = production_environment(
        as_user(database.app_url, rls_bypass_role), GUNICORN_BIND=f"127.0.0.1:{free_port()}"
    )
    result = subprocess.run(
        [str(BIN / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"role {rls_bypass_role} has BYPASSRLS" in result.stderr
    assert "Booting worker" not in result.stdout + result.stderr


def test_the_postgres_init_script_creates_roles_that_migrate_and_pass_the_check() -> None:
    """deploy/postgres/initdb-nyxcore.sh, then the migrate service's two commands, as compose runs them."""
    suffix = uuid.uuid4().hex[:8]
    db_name, owner, app_role = f"nyxcore_init_{suffix}", f"nyxcore_owner_i{suffix}", f"nyxcore_app_i{suffix}"
    owner_password, app_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    admin = make_url(ADMIN_URL)
    init_environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGPASSWORD": admin.password or "",
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": admin.database or "postgres",
        "NYXCORE_DB_NAME": db_name,
        "NYXCORE_DB_OWNER": owner,
        "NYXCORE_APP_ROLE": app_role,
        "NYXCORE_DB_OWNER_PASSWORD": owner_password,
        "NYXCORE_APP_PASSWORD": app_password,
    }
    base = admin.set(database=db_name)
    app_environment = production_environment(
        base.set(username=app_role, password=app_password).render_as_string(hide_password=False),
        MIGRATION_DATABASE_URL=base.set(username=owner, password=owner_password).render_as_string(
            hide_password=False
        ),
        NYXCORE_APP_ROLE=app_role,
    )
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        init = subprocess.run(
            ["sh", str(ROOT / "deploy" / "postgres" / "initdb-nyxcore.sh")],
            env=init_environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert init.returncode == 0, init.stderr
        with server.connect() as conn:
            roles = {
                row.rolname: row
                for row in conn.execute(
                    text(
                        "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
                        "FROM pg_roles WHERE rolname IN (:o, :a)"
                    ),
                    {"o": owner, "a": app_role},
                )
            }
            db_owner = conn.execute(
                text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :d"), {"d": db_name}
            ).scalar_one()
        assert db_owner == owner
        for role in (owner, app_role):
            assert roles[role].rolcanlogin
            assert not (roles[role].rolsuper or roles[role].rolbypassrls or roles[role].rolcreaterole)
            assert not roles[role].rolcreatedb

        for command in (["db", "upgrade"], ["nyxcore", "check-db-role"]):
            result = subprocess.run(
                [str(BIN / "flask"), "--app", "wsgi", *command],
                cwd=ROOT,
                env=app_environment,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        assert "subject to row-level security" in result.stdout
    finally:
        with server.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": db_name},
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {db_name}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {app_role}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {owner}"))
        server.dispose()


# ---------------------------------------------------------------------------------------------------
# Dockerfile and docker-compose.yml (no Docker engine here: linted and read).


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_builds_one_pinned_non_root_image_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(images) >= 2, "expected a build stage and a runtime stage"
    assert all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image) for image in images), images
    assert "pip install --no-cache-dir -r requirements/app.txt" in dockerfile
    assert re.search(r"pip install .*--no-deps.* \.$", dockerfile, re.MULTILINE)
    assert re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)[-1] not in ("root", "0", "0:0")
    healthcheck = dockerfile.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert "/api/v1/health" in healthcheck and "curl" not in healthcheck
    assert 'CMD ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]' in dockerfile
    copied = {
        source
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert {"wsgi.py", "worker.py", "gunicorn.conf.py", "migrations", "requirements/app.txt"} <= copied
    # .dockerignore lets in exactly what is copied, and never the .env with its secrets.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied <= allowed, copied - allowed
    assert ".env" not in allowed


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def test_compose_has_every_service_with_health_checks_and_pinned_images() -> None:
    services = load_compose()["services"]
    assert set(services) == {"db", "redis", "migrate", "web", "worker", "beat", "nginx"}
    for name in LONG_RUNNING:
        healthcheck = services[name].get("healthcheck", {})
        assert healthcheck.get("test") and not healthcheck.get("disable"), name
    for name in ("db", "redis", "nginx"):
        # An exact release (postgres numbers its releases major.minor), never a moving tag.
        assert re.fullmatch(r"[a-z]+:\d+(\.\d+)+-[a-z0-9.]+", services[name]["image"]), services[name][
            "image"
        ]
    assert {services[name]["image"] for name in ("migrate", *APP_SERVICES)} == {services["web"]["image"]}
    # Only nginx is reachable from outside.
    assert [name for name, service in services.items() if service.get("ports")] == ["nginx"]


def test_compose_starts_services_in_order() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert services["nginx"]["depends_on"] == {"web": {"condition": "service_healthy"}}
    # nginx resolves `web` once: web keeps its address when it is recreated.
    assert services["web"]["networks"]["default"]["ipv4_address"].startswith("172.30.80.")


def test_compose_runs_the_migration_as_the_owner_and_checks_the_app_role_before_the_app() -> None:
    services = load_compose()["services"]
    migrate = services["migrate"]
    command = " ".join(migrate["command"])
    assert command.index("flask --app wsgi db upgrade") < command.index(
        "flask --app wsgi nyxcore check-db-role"
    )
    assert migrate["restart"] == "no"
    assert migrate["env_file"] == ".env"
    assert migrate["environment"]["MIGRATION_DATABASE_URL"].startswith("${MIGRATION_DATABASE_URL")
    for name in APP_SERVICES:
        # The owner role's URL stays with migrate; empty means "same as DATABASE_URL".
        assert services[name]["environment"]["MIGRATION_DATABASE_URL"] == "", name
        assert services[name]["env_file"] == ".env"
    assert services["web"]["command"] == ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
    for name, program in (("worker", "celery -A worker worker"), ("beat", "celery -A worker beat")):
        command = " ".join(services[name]["command"])
        assert command.index("nyxcore check-db-role &&") < command.index(f"exec {program}"), name


def test_compose_mounts_the_init_script_nginx_conf_and_certificates() -> None:
    services = load_compose()["services"]
    assert any(
        volume.startswith("./deploy/postgres/initdb-nyxcore.sh:/docker-entrypoint-initdb.d/")
        for volume in services["db"]["volumes"]
    )
    nginx_volumes = services["nginx"]["volumes"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx_volumes
    assert "./deploy/certs:/etc/nginx/certs:ro" in nginx_volumes
    assert "./nyxcore/static:/srv/nyxcore/static:ro" in nginx_volumes
    assert os.access(ROOT / "deploy" / "postgres" / "initdb-nyxcore.sh", os.X_OK)


def test_env_example_lists_what_compose_and_gunicorn_read() -> None:
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    compose = (ROOT / "docker-compose.yml").read_text()
    gunicorn_conf = (ROOT / "gunicorn.conf.py").read_text()
    read = set(re.findall(r"\$\{([A-Z_]+)", compose)) | set(
        re.findall(r'(?:_int\(|environ\.get\()"([A-Z_]+)"', gunicorn_conf)
    )
    assert read
    assert read - documented == set()
