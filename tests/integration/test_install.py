"""The README's manual install ("Installing on PostgreSQL"), run as written against an empty database.

The fenced sh blocks of that section are taken from README.md, one per numbered step, in order. The
test puts its own values where the operator puts theirs (the `name=value` lines of a block: fresh
role and database names, passwords, the test server's host and port, the test Redis, free ports),
and runs each block with bash in a new shell, in a folder that stands in for the checkout: step 1
with psql as the test server's superuser, then the settings, the migration, the role check and the
three processes. Someone then signs up over HTTP, sent the way nginx forwards a browser's request.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import secrets
import shlex
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from psycopg2.errors import InsufficientPrivilege
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.conftest import ADMIN_URL, PASSWORD, REDIS_URL, csrf_from
from tests.helpers import free_port
from tests.integration.test_deployment import Browser, plain_status
from tests.live import BIN, ROOT, LiveServers

SECTION = "## Installing on PostgreSQL"
STEPS = ("roles and database", "settings", "schema", "check", "run")
# What the app needs from the checkout, linked into the test's stand-in for it.
ENTRY_POINTS = ("wsgi.py", "worker.py", "gunicorn.conf.py")
LOAD_SETTINGS = "set -a; . ./.env; set +a"
_FENCE = re.compile(r"^(?P<indent>[ ]*)```sh\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.MULTILINE | re.DOTALL)


def readme_install_steps(readme: str) -> list[str]:
    """The sh block of each numbered step of the install section, in order; fails if one is missing."""
    match = re.search(rf"^{re.escape(SECTION)}\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no {SECTION!r} section"
    items = re.split(r"^(\d+)\. ", match.group(1), flags=re.MULTILINE)[1:]
    numbers = [int(n) for n in items[0::2]]
    assert numbers == list(range(1, len(STEPS) + 1)), (
        f"{SECTION} should number its steps 1 to {len(STEPS)} ({', '.join(STEPS)}), not {numbers}"
    )
    steps = []
    for number, body in zip(numbers, items[1::2], strict=True):
        blocks = [textwrap.dedent(m.group("body")) for m in _FENCE.finditer(body)]
        assert len(blocks) == 1, f"step {number} ({STEPS[number - 1]}) should have one ```sh block"
        steps.append(blocks[0])
    return steps


def with_values(block: str, values: dict[str, str], *, step: int) -> str:
    """`block` with each `name=...` line (a shell variable or a .env entry) set to the test's value."""
    for name, value in values.items():
        line = f"{name}={shlex.quote(value)}"
        block, found = re.subn(
            rf"^{re.escape(name)}=.*$", lambda _m, line=line: line, block, flags=re.MULTILINE
        )
        assert found, f"step {step} of {SECTION} no longer sets {name}=...; update this test"
    return block


class ReadmeInstall:
    """One run of the README's steps: its names, its folder, and what it started (for the cleanup)."""

    def __init__(self, checkout: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        admin = make_url(ADMIN_URL)
        self.checkout = checkout
        self.db, self.owner, self.app = (
            f"nyxcore_readme_{suffix}",
            f"readme_owner_{suffix}",
            f"readme_app_{suffix}",
        )
        self.owner_password, self.app_password = secrets.token_hex(24), secrets.token_hex(24)
        self.db_host, self.db_port = admin.host or "127.0.0.1", admin.port or 5432
        self.web_port = free_port()
        self.queue = f"nyxcore-readme-{suffix}"
        self.ratelimit_prefix = f"nyxcore-readme-{suffix}"
        self.steps = readme_install_steps((ROOT / "README.md").read_text())
        self.process_group: int | None = None
        self.servers = LiveServers(checkout, cwd=checkout)
        self.log = checkout / "processes.log"
        for name in ENTRY_POINTS:
            (checkout / name).symlink_to(ROOT / name)

    @property
    def public_url(self) -> str:
        return f"https://127.0.0.1:{self.web_port}"

    def role_values(self) -> dict[str, str]:
        return {
            "db": self.db,
            "owner": self.owner,
            "app": self.app,
            "owner_password": self.owner_password,
            "app_password": self.app_password,
        }

    def settings_values(self) -> dict[str, str]:
        return {
            **self.role_values(),
            "db_host": self.db_host,
            "db_port": str(self.db_port),
            "REDIS_URL": REDIS_URL,
            "PUBLIC_URL": self.public_url,
            # Nothing listens there: no step here sends mail (sign-up only queues it).
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(free_port()),
            "SMTP_STARTTLS": "false",
            "GUNICORN_BIND": f"127.0.0.1:{self.web_port}",
        }

    def environment(self, **extra: str) -> dict[str, str]:
        """A new login shell's environment: the virtualenv active and nothing of the test's own."""
        return {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.checkout),
            "LANG": "C.UTF-8",
            # Not in the README: they keep this run's counters and queue apart from other runs on Redis.
            "RATELIMIT_KEY_PREFIX": self.ratelimit_prefix,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "GUNICORN_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",  # so that beat's banner reaches the log while it runs
            **extra,
        }

    def script(self, step: int) -> str:
        block = self.steps[step - 1]
        if step == 1:
            return with_values(block, self.role_values(), step=step)
        if step == 2:
            return with_values(block, self.settings_values(), step=step)
        return block

    def run(self, step: int) -> subprocess.CompletedProcess[str]:
        """Run step `step` in a new shell, as the superuser for step 1; fails the test if it fails."""
        result = self.run_command(self.script(step), superuser=step == 1)
        assert result.returncode == 0, f"step {step} failed:\n{result.stdout}{result.stderr}"
        return result

    def run_command(self, script: str, *, superuser: bool = False) -> subprocess.CompletedProcess[str]:
        extra = {}
        if superuser:
            admin = make_url(ADMIN_URL)
            extra = {
                "PGHOST": admin.host or "127.0.0.1",
                "PGPORT": str(admin.port or 5432),
                "PGUSER": admin.username or "postgres",
                "PGPASSWORD": admin.password or "",
            }
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.checkout,
            env=self.environment(**extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def flask(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`flask --app wsgi ...` in a new shell, with the settings of step 2 loaded as steps 3-5 do."""
        return self.run_command(f"{LOAD_SETTINGS}\nflask --app wsgi {shlex.join(arguments)}")

    def start_processes(self) -> None:
        """Step 5, which leaves gunicorn, the worker and beat running in the background of its shell.

        The shell leads a process group of its own, so that the cleanup stops all three with it.
        """
        shell = self.servers.spawn(
            "processes", ["bash", "-e", "-o", "pipefail", "-c", self.script(5)], env=self.environment()
        )
        self.process_group = shell.group
        assert shell.popen.wait(timeout=30) == 0, self.log.read_text()

    def process_environments(self) -> dict[int, str]:
        """The environment of each process step 5 left running, by pid (read from /proc)."""
        assert self.process_group is not None
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # Fields after the command (which may hold spaces) in parentheses: state, ppid, pgrp.
                group = int(stat.read_text().rsplit(")", 1)[1].split()[2])
                if group == self.process_group:
                    found[int(stat.parent.name)] = (stat.parent / "environ").read_bytes().decode()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not ours to read
        assert len(found) >= 3, f"expected gunicorn, the worker and beat in group {self.process_group}"
        return found

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        self.servers.wait_until(condition, what, timeout=30, log=self.log.read_text)

    def owner_url(self) -> str:
        return (
            make_url(ADMIN_URL)
            .set(username=self.owner, password=self.owner_password, database=self.db)
            .render_as_string(hide_password=False)
        )

    def clean_up(self) -> None:
        """Stop what step 5 started, then drop the database and both roles and this run's Redis keys."""
        self.servers.stop()
        server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with server.connect() as conn:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": self.db},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db}"'))
                conn.execute(text(f'DROP ROLE IF EXISTS "{self.app}"'))
                conn.execute(text(f'DROP ROLE IF EXISTS "{self.owner}"'))
        finally:
            server.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for pattern in (f"*{self.queue}*", f"*{self.ratelimit_prefix}*"):
                for key in client.scan_iter(match=pattern):
                    client.delete(key)
        finally:
            client.close()


@pytest.fixture
def install(tmp_path: Path) -> Iterator[ReadmeInstall]:
    run = ReadmeInstall(tmp_path)
    try:
        yield run
    finally:
        run.clean_up()


def test_the_readme_install_runs_as_written_and_serves_sign_up_over_http(install: ReadmeInstall) -> None:
    for step in (1, 2, 3):
        install.run(step)
    assert "subject to row-level security" in install.run(4).stdout
    install.start_processes()
    install.wait_for(lambda: plain_status(install.web_port, "/api/v1/health") == 200, "gunicorn")
    install.wait_for(lambda: f".> {install.queue} exchange=" in install.log.read_text(), "celery worker")
    install.wait_for(lambda: "is starting." in install.log.read_text(), "celery beat")
    for pid, environ in install.process_environments().items():
        assert install.owner_password not in environ, f"process {pid} holds the owner's password"

    # gunicorn speaks plain HTTP to nginx, which says the browser used HTTPS; the cookies are Secure.
    browser = Browser(f"http://127.0.0.1:{install.web_port}")
    browser.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "http")))
    from_nginx = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    page = browser.get("/auth/signup", headers=from_nginx)
    assert page.status == 200, page.body
    form = {
        "csrf_token": csrf_from(page.body),
        "name": "Ina Stall",
        "email": f"readme-{uuid.uuid4().hex[:8]}@example.com",
        "password": PASSWORD,
    }
    # Over HTTPS Flask-WTF wants a same-origin Referer: the scheme from nginx, the host as sent.
    referer = f"{install.public_url}/auth/signup"
    created = browser.post("/auth/signup", form, headers={**from_nginx, "Referer": referer})
    assert created.status == 303, created.body
    assert created.headers["Location"] in ("/auth/check-inbox", f"{install.public_url}/auth/check-inbox")
    session_cookie = next(c for c in created.headers.get_all("Set-Cookie", []) if c.startswith("session="))
    assert "Secure" in session_cookie

    # Sign-up mails a link to finish it; logging in with the password works before it is opened.
    login = browser.get("/auth/login", headers=from_nginx)
    credentials = {"csrf_token": csrf_from(login.body), "email": form["email"], "password": PASSWORD}
    logged_in = browser.post(
        "/auth/login", credentials, headers={**from_nginx, "Referer": f"{install.public_url}/auth/login"}
    )
    assert logged_in.status == 302, logged_in.body

    team = browser.get("/team/", headers=from_nginx)
    assert team.status == 200, team.body
    assert "Ina Stall" in team.body


def test_the_readme_roles_cannot_create_roles_and_so_cannot_grant_themselves_server_programs(
    install: ReadmeInstall,
) -> None:
    install.run(1)
    server = create_engine(ADMIN_URL)
    try:
        with server.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
                    "FROM pg_roles WHERE rolname IN (:o, :a) ORDER BY rolname"
                ),
                {"o": install.owner, "a": install.app},
            ).all()
    finally:
        server.dispose()
    assert [tuple(row) for row in rows] == [
        (install.app, True, False, False, False, False),
        (install.owner, True, False, False, False, False),
    ]

    owner = create_engine(install.owner_url())
    try:
        with owner.connect() as conn, pytest.raises(ProgrammingError) as refused:
            conn.execute(text(f'GRANT pg_execute_server_program TO "{install.owner}"'))
        assert isinstance(refused.value.orig, InsufficientPrivilege), refused.value
    finally:
        owner.dispose()


def test_db_roles_grants_on_an_empty_database(install: ReadmeInstall) -> None:
    install.run(1)
    install.run(2)
    result = install.flask("nyxcore", "db-roles")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Updated role {install.app}; privileges granted." in result.stdout
    assert "warning" not in result.stderr
    # ... and the migration after it still leaves the app role held by row-level security.
    install.run(3)
    assert "subject to row-level security" in install.run(4).stdout


def test_a_missing_app_role_is_explained_by_db_roles_and_the_migration(install: ReadmeInstall) -> None:
    install.run(1)
    install.run(2)
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'REVOKE CONNECT ON DATABASE "{install.db}" FROM "{install.app}"'))
            conn.execute(text(f'DROP ROLE "{install.app}"'))
    finally:
        server.dispose()

    # A production app checks its own database role when it is built, before any command runs.
    for command in (("nyxcore", "db-roles"), ("db", "upgrade")):
        result = install.flask(*command)
        assert result.returncode == 3  # EXIT_CONFIG_ERROR
        assert f"the app database role '{install.app}' (DATABASE_URL) does not exist" in result.stderr
        assert '"Installing on PostgreSQL", step 1' in result.stderr
        assert f'CREATE ROLE "{install.app}" LOGIN NOSUPERUSER' in result.stderr
        assert "Traceback" not in result.stderr


def test_db_roles_warns_about_an_owner_that_can_still_create_roles(install: ReadmeInstall) -> None:
    """An owner made by an earlier README, with CREATEROLE, is flagged with the statement that fixes it."""
    install.run(1)
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'ALTER ROLE "{install.owner}" CREATEROLE'))
    finally:
        server.dispose()
    install.run(2)
    result = install.flask("nyxcore", "db-roles")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"warning: role {install.owner} has CREATEROLE" in result.stderr
    assert f'ALTER ROLE "{install.owner}" NOCREATEROLE' in result.stderr


def test_db_roles_leaves_the_app_role_password_to_a_superuser(install: ReadmeInstall) -> None:
    install.run(1)
    install.run(2)
    result = install.run_command(
        f"{LOAD_SETTINGS}\nNYXCORE_APP_PASSWORD=another-password flask --app wsgi nyxcore db-roles"
    )
    assert result.returncode == 1
    assert f"role {install.owner} may not set the password of role {install.app}" in result.stderr
    assert f"ALTER ROLE \"{install.app}\" PASSWORD '...';" in result.stderr
    assert "Traceback" not in result.stderr
