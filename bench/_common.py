"""Helpers shared by the benchmarks.

- `throwaway_database`: a fresh PostgreSQL database with the owner and app roles (plus any extra
  roles a benchmark asks for), migrated, and dropped with its roles afterwards, like tests/conftest.py.
- `GunicornServer`: `gunicorn wsgi:app` on a free loopback port with a given environment.
- `load_generator`: the body of a client process that logs HTTP clients in and drives them on command.
- `WireCounter`: a TCP relay in front of PostgreSQL that records every query message on the wire,
  that is every round trip psycopg2 makes (including the ones SQLAlchemy's events do not see).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode

from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nyxcore import create_app
from nyxcore.config import load_config
from nyxcore.extensions import db as _db

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = (
    os.environ.get("NYXCORE_BENCH_DATABASE_URL")
    or os.environ.get("NYXCORE_TEST_DATABASE_URL")
    or "postgresql://postgres@127.0.0.1:5432/postgres"
)
USER_AGENT = "nyxcore-bench/1"
_CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


# --- The database --------------------------------------------------------------------------------


def _url(base: str, *, user: str | None = None, database: str | None = None, **query: str) -> str:
    url = make_url(base)
    if user is not None:
        url = url.set(username=user, password=None)
    if database is not None:
        url = url.set(database=database)
    if query:
        url = url.update_query_dict(query)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class BenchDatabase:
    """A throwaway database and its roles, all named with one random suffix."""

    name: str
    owner_role: str
    app_role: str
    extra_roles: tuple[str, ...]

    def url(self, role: str | None = None, **query: str) -> str:
        """A URL for this database as `role` (default: the superuser of ADMIN_URL)."""
        return _url(ADMIN_URL, user=role, database=self.name, **query)

    @property
    def admin_url(self) -> str:
        return self.url()

    @property
    def owner_url(self) -> str:
        return self.url(self.owner_role)

    @property
    def app_url(self) -> str:
        return self.url(self.app_role)


def app_environment(database: BenchDatabase, database_url: str) -> dict[str, str]:
    """The environment of a benchmarked app: testing mode, no rate limits, eager tasks, console mail."""
    return {
        "NYXCORE_ENV": "testing",
        "DATABASE_URL": database_url,
        "MIGRATION_DATABASE_URL": database.owner_url,
        "NYXCORE_APP_ROLE": database.app_role,
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "REDIS_URL": "",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "MAIL_BACKEND": "console",
        "RATELIMIT_ENABLED": "false",
        "PUBLIC_URL": "http://127.0.0.1",
    }


def app_config(database: BenchDatabase, database_url: str) -> dict[str, Any]:
    """Flask configuration for an in-process app on `database_url`."""
    return load_config(app_environment(database, database_url))


@contextmanager
def throwaway_database(
    prefix: str, *, extra_roles: Mapping[str, str] | None = None
) -> Iterator[BenchDatabase]:
    """Create roles and a database, run the migrations, yield; drop everything on the way out.

    `extra_roles` maps a name stem to the attributes of a further login role (for example
    `{"bypass": "BYPASSRLS"}`); the caller grants it what it needs.
    """
    suffix = uuid.uuid4().hex[:8]
    extras = {stem: f"{prefix}_{stem}_{suffix}" for stem in (extra_roles or {})}
    database = BenchDatabase(
        name=f"{prefix}_{suffix}",
        owner_role=f"{prefix}_owner_{suffix}",
        app_role=f"{prefix}_app_{suffix}",
        extra_roles=tuple(extras.values()),
    )
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f"CREATE ROLE {database.owner_role} LOGIN NOSUPERUSER NOBYPASSRLS"))
            conn.execute(text(f"CREATE ROLE {database.app_role} LOGIN NOSUPERUSER NOBYPASSRLS"))
            for stem, role in extras.items():
                conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER {(extra_roles or {})[stem]}"))
            conn.execute(text(f"CREATE DATABASE {database.name} OWNER {database.owner_role}"))
        app = create_app(app_config(database, database.app_url))
        with app.app_context():
            upgrade()
            _db.engine.dispose()
        yield database
    finally:
        with server.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": database.name},
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {database.name}"))
            for role in (*database.extra_roles, database.app_role, database.owner_role):
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        server.dispose()


def machine_description() -> str:
    """CPU count and model, for the results file."""
    model = "unknown CPU"
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model})"


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds each of `pids` has used so far (ended processes are left out)."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            # Fields after the parenthesised command name: state is [0], utime [11], stime [12].
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks_per_second
    return used


class CpuMeter:
    """CPU time used by a changing set of processes between start() and stop()."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = cpu_seconds(self._pids())

    def stop(self) -> float:
        """Seconds used since start() by the processes alive then or now (new ones from zero)."""
        after = cpu_seconds({*self._before, *self._pids()})
        return sum(seconds - self._before.get(pid, 0.0) for pid, seconds in after.items())


def child_pids(parent: int) -> list[int]:
    """The direct children of process `parent`."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            children.append(int(entry.name))
    return children


# --- gunicorn --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GunicornServer:
    """`gunicorn wsgi:app` with sync workers on a free loopback port; stop() ends only this process.

    The project's gunicorn.conf.py (access log, redacting logger, start-up checks) applies when it
    exists, as in production; the command line, which takes precedence, fixes the bind address and
    the workers: `workers` sync workers of one thread each.
    """

    def __init__(self, name: str, environment: Mapping[str, str], *, workers: int, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"gunicorn-{name}.log"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--threads",
            "1",  # more than one thread would silently turn the sync worker into gthread
            "--log-level",
            "warning",
            "wsgi:app",
        ]
        if (ROOT / "gunicorn.conf.py").exists():
            command[3:3] = ["--config", str(ROOT / "gunicorn.conf.py")]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **environment},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until /api/v1/health answers 200; raise with the server's log if it never does."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/api/v1/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with suppress(URLError, OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn ({self.name}) did not start:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- HTTP clients ----------------------------------------------------------------------------------


def csrf_token_in(page: str) -> str:
    """The CSRF token of the first form in an HTML page."""
    match = _CSRF.search(page)
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match.group(1)


class Browser:
    """One HTTP client: its own connection (kept alive when the server allows) and session cookies."""

    def __init__(self, port: int, *, headers: Mapping[str, str] | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}  # sent with every request

    def request(self, method: str, path: str, form: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # http.client reopens the connection by itself when the server closed it after a response.
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data

    def log_in(self, email: str, password: str) -> None:
        status, page = self.request("GET", "/auth/login")
        if status != 200:
            raise RuntimeError(f"GET /auth/login answered {status}")
        form = {"csrf_token": csrf_token_in(page.decode()), "email": email, "password": password}
        status, _ = self.request("POST", "/auth/login", form)
        if status != 302:
            raise RuntimeError(f"logging in as {email} answered {status}, not 302")

    def close(self) -> None:
        self.connection.close()


def _drive(browsers: list[Browser], path: str, seconds: float) -> dict[str, float]:
    """Every browser GETs `path` in a loop for `seconds`; completed 200s per second and latencies."""
    barrier = threading.Barrier(len(browsers) + 1)
    latencies: list[list[float]] = [[] for _ in browsers]
    errors = [0] * len(browsers)
    deadline = 0.0

    def run(index: int) -> None:
        barrier.wait()
        browser, mine = browsers[index], latencies[index]
        while (started := time.perf_counter()) < deadline:
            try:
                status, _ = browser.request("GET", path)
            except (OSError, http.client.HTTPException):
                browser.connection.close()
                errors[index] += 1
                continue
            if status == 200:
                mine.append(time.perf_counter() - started)
            else:
                errors[index] += 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(browsers))]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    every = sorted(x for mine in latencies for x in mine)
    count = len(every)
    return {
        "requests": count,
        "errors": sum(errors),
        "elapsed": elapsed,
        "rate": count / elapsed,
        "p50_ms": 1000 * every[count // 2] if count else 0.0,
        "p95_ms": 1000 * every[int(count * 0.95)] if count else 0.0,
    }


def load_generator(pipe: Connection) -> None:
    """The client process. Commands on `pipe`, each answered with ("ok", result) or ("error", text):

    ("login", variant, port, emails, password, check_path, check_text): one logged-in browser per email,
        each checked to see `check_text` on `check_path`;
    ("run", variant, path, seconds): drive that variant's browsers, answer `_drive`'s figures;
    ("stop",).
    """
    browsers: dict[str, list[Browser]] = {}
    while True:
        command = pipe.recv()
        try:
            if command[0] == "stop":
                pipe.send(("ok", None))
                return
            if command[0] == "login":
                _, variant, port, emails, password, check_path, check_text = command
                logged_in = []
                for email in emails:
                    browser = Browser(port)
                    browser.log_in(email, password)
                    status, page = browser.request("GET", check_path)
                    if status != 200 or check_text.encode() not in page:
                        raise RuntimeError(
                            f"{variant}: {check_path} for {email} answered {status} without {check_text!r}"
                        )
                    logged_in.append(browser)
                browsers[variant] = logged_in
                pipe.send(("ok", len(logged_in)))
            elif command[0] == "run":
                _, variant, path, seconds = command
                pipe.send(("ok", _drive(browsers[variant], path, seconds)))
            else:
                pipe.send(("error", f"unknown command {command[0]!r}"))
        except Exception as exc:  # report to the parent, which stops the benchmark
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


# --- Counting round trips on the wire ------------------------------------------------------------


class WireCounter:
    """A TCP relay to PostgreSQL that records the text of every simple-query ('Q') message.

    psycopg2 speaks only the simple query protocol and waits for each answer, so one 'Q' message is
    one round trip. Connect through `url(...)`: it turns TLS and GSS encryption off so the relay
    can read the stream.
    """

    def __init__(self, target_url: str) -> None:
        target = make_url(target_url)
        self._target = (target.host or "127.0.0.1", target.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._queries: list[str] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """`url` routed through the relay."""
        routed = make_url(url).set(host="127.0.0.1", port=self.port)
        routed = routed.update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        return routed.render_as_string(hide_password=False)

    def take(self) -> list[str]:
        """The queries seen since the last call, in order."""
        with self._lock:
            queries, self._queries = self._queries, []
        return queries

    def close(self) -> None:
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._client_to_server, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        # The server's side ends last (after the client's Terminate), so this direction closes both.
        source.close()
        sink.close()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False  # the startup packet has a length but no type byte
        with suppress(OSError):
            while chunk := client.recv(65536):
                buffer += chunk
                while True:
                    if not started:
                        if len(buffer) < 4:
                            break
                        (length,) = struct.unpack("!I", buffer[:4])
                        if len(buffer) < length:
                            break
                        buffer, started = buffer[length:], True
                        continue
                    if len(buffer) < 5:
                        break
                    kind = buffer[:1]
                    (length,) = struct.unpack("!I", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    if kind == b"Q":
                        with self._lock:
                            self._queries.append(
                                buffer[5 : 1 + length].rstrip(b"\0").decode(errors="replace")
                            )
                    buffer = buffer[1 + length :]
                # Forwarded after recording, so a query is on the list before its answer can arrive.
                upstream.sendall(chunk)
        with suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)


# Users, teams and memberships for :teams teams of :members members each. Deterministic ids (md5 of
# a name) let rows refer to each other without lookups; user t-0 owns team t. Every address is
# verified, as a real team's are: an owner with an unverified address is shown no open invitations,
# and the team page's admin view (issue 15) includes them.
SEED_TEAM_STATEMENTS = (
    """
    INSERT INTO users (id, email, name, password_hash, email_verified_at)
    SELECT md5('user-' || t || '-' || m)::uuid, 'user' || t || '-' || m || '@bench.example',
           'Bench User ' || t || '-' || m, :password_hash, now() - interval '400 days'
    FROM generate_series(0, :teams - 1) AS t, generate_series(0, :members - 1) AS m
    """,
    """
    INSERT INTO tenants (id, name, slug, created_by)
    SELECT md5('team-' || t)::uuid, 'Bench team ' || t, 'bench-team-' || t, md5('user-' || t || '-0')::uuid
    FROM generate_series(0, :teams - 1) AS t
    """,
    """
    INSERT INTO tenant_members (id, tenant_id, user_id, role, invited_by, invited_at, joined_at)
    SELECT md5('member-' || t || '-' || m)::uuid, md5('team-' || t)::uuid, md5('user-' || t || '-' || m)::uuid,
           CASE WHEN m = 0 THEN 'owner' WHEN m <= 2 THEN 'admin' WHEN m <= 40 THEN 'member' ELSE 'viewer' END,
           CASE WHEN m = 0 THEN NULL ELSE md5('user-' || t || '-0')::uuid END,
           CASE WHEN m = 0 THEN NULL ELSE now() - make_interval(days => 400 - m) END,
           now() - make_interval(days => 400 - m, secs => t)
    FROM generate_series(0, :teams - 1) AS t, generate_series(0, :members - 1) AS m
    """,
)
