"""Throughput and latency of the main pages under the production configuration, driven by wrk (issues 8, 15).

    .venv/bin/python bench/load.py [--connections 16,64] [--threads 2] [--team-seconds 60] [--seconds 20]
                                   [--rounds 1] [--warmup 3] [--timeout 10] [--workers 2]
                                   [--teams 50] [--members 50] [--notes 60] [--invitations 5]

Creates its own database and roles (bench/_common.py), migrates it and seeds, through plain SQL,
teams x members, notes and open invitations; one invitation of team 0 has a token known to this
script (only its SHA-256 is stored, as the app does). gunicorn then serves `bench.reference_app:app`
(the app as wsgi.py builds it, plus the bench routes) with NYXCORE_ENV=production over PostgreSQL
with row-level security: 2 sync workers of one thread, rate limits on (Redis storage), the default
pool (DATABASE_POOL_SIZE 5, a ping only after 10 s idle). Only SESSION_COOKIE_SECURE is off, so that the session
cookie works over plain http; the magic-link limit is raised so that a single client address can
load that page at all (see RESULTS.md).

A second gunicorn, with the same configuration file and workers, serves a five-line Flask app
(bench/bare_app.py): its hello is the floor that `/bench/hello` through the whole app is compared with.

wrk, in its own process, loads one URL at a time for a fixed time with the same connections and
threads, once at each --connections level (16: throughput; 64: queueing): the team page `/team/`
and the NyxBook list `/notes/` as the owner of team 0 (the session cookie of one log in), the
magic-link page `/invite/<token>`, the reference `/bench/ref50` (signed out, one indexed SELECT of 50
notes of team 0 through the ORM in that team's context, a template file), `/bench/hello` (no
database) and the bare Flask hello anonymously; for information, the signed-in layout alone
(`/bench/layout`) and the reference's work on a signed-in page (`/bench/ref50-signed-in`), as the
owner. The reference runs first and after each round, so machine noise falls on both sides of the
ratios.
After each run the script waits until the workers are idle: the requests wrk leaves in the listen
backlog when it stops are still served, and would otherwise slow the start of the next run.
Each run also records the CPU time per request of the gunicorn workers and their PostgreSQL
backends (from /proc), steadier than requests/s on a shared machine.

Prints requests/s, p50 and p99 latency, errors (non-2xx/3xx responses and socket errors) and the
ratios to the reference (requests/s and CPU per request) for each page and level, then PASS or
BELOW TARGET for each target of issue 15: team page and NyxBook list >= 0.6 x the reference in
requests/s and in CPU per request at every level; /bench/hello <= 1.2 x the bare Flask hello's CPU
per request; zero errors on the team page at 64 connections for 60 s; p99 within 4 x p50 at 16
connections; every response a 200 (no 429, no redirect to log in). INFORMATION lines (no target)
give the team page and NyxBook against the signed-in reference.
Exits 0 unless the benchmark itself failed (2 when wrk is missing). Drops its database and roles.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from _common import (
    ROOT,
    SEED_TEAM_STATEMENTS,
    USER_AGENT,
    BenchDatabase,
    Browser,
    CpuMeter,
    GunicornServer,
    free_port,
    machine_description,
    throwaway_database,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore import passwords
from nyxcore.crypto import generate_key_setting

APP = "bench.reference_app:app"
REDIS_URL = (
    os.environ.get("NYXCORE_BENCH_REDIS_URL")
    or os.environ.get("NYXCORE_TEST_REDIS_URL")
    or "redis://127.0.0.1:6379/15"
)
PASSWORD = "correct horse battery staple"  # noqa: S105 (the seeded users of a throwaway database)
RATIO_TARGET = 0.6
HELLO_TARGET = 1.2  # /bench/hello's CPU per request over the bare Flask hello's
QUEUE_CONNECTIONS = 64  # the level at which the team page must run 60 s without an error
BARE_APP = "bench.bare_app:app"
TAIL_TARGET = 4.0  # p99 / p50
IDLE_CPU_SECONDS = 0.025  # CPU of all gunicorn workers in 0.25 s below which they are idle (10% of a core)
OUT = ROOT / "bench" / "out"
POOL_SIZE = os.environ.get("DATABASE_POOL_SIZE") or "5"  # the app's default; measured as configured
INSTALL_WRK = "sudo apt-get install wrk   (Debian/Ubuntu package `wrk`)"


OWNER_EMAIL = "user0-0@bench.example"

SEED_STATEMENTS = (
    *SEED_TEAM_STATEMENTS,
    """
    INSERT INTO notes (id, tenant_id, author_id, title, body, created_at, updated_at)
    SELECT md5('note-' || t || '-' || n)::uuid, md5('team-' || t)::uuid,
           md5('user-' || t || '-' || (n % :members))::uuid, 'Bench note ' || t || '-' || n,
           repeat('Steps, links and decisions of the team. ', 20),
           now() - make_interval(days => n + 1), now() - make_interval(hours => n)
    FROM generate_series(0, :teams - 1) AS t, generate_series(0, :notes - 1) AS n
    """,
    # Open invitations; the first of team 0 is the one whose token this script knows.
    """
    INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, expires_at)
    SELECT md5('invitation-' || t || '-' || i)::uuid, md5('team-' || t)::uuid,
           CASE WHEN t = 0 AND i = 0 THEN :token_hash
                ELSE encode(sha256(convert_to('invitation-' || t || '-' || i, 'UTF8')), 'hex') END,
           'invitee' || t || '-' || i || '@bench.example', 'member', md5('user-' || t || '-0')::uuid,
           now() + interval '7 days'
    FROM generate_series(0, :teams - 1) AS t, generate_series(0, :invitations - 1) AS i
    """,
)

# wrk counts responses by status in each of its threads; done() prints one JSON line of totals.
WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local counts, parts = {}, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do counts[status] = (counts[status] or 0) + n end
  end
  for status, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', status, n)) end
  io.write(string.format(
    'NYXCORE_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"statuses": {%s}}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
"""


@dataclass(frozen=True)
class Page:
    name: str
    label: str
    path: str
    shown_path: str  # what is printed (the magic-link token stays out of the output)
    signed_in: bool
    expect: str  # text the page must contain
    server: str = "app"  # which gunicorn serves it: "app" or "bare"


@dataclass
class Run:
    page: str
    connections: int
    seconds: float
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int
    statuses: dict[str, int]
    app_cpu_ms: float
    db_cpu_ms: float
    drain_seconds: float = 0.0  # how long the workers stayed busy with wrk's abandoned requests

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + self.socket_errors

    @property
    def cpu_ms(self) -> float:
        return self.app_cpu_ms + self.db_cpu_ms


@dataclass
class Series:
    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(r.requests for r in self.runs) / sum(r.seconds for r in self.runs)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def statuses(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for run in self.runs:
            for status, count in run.statuses.items():
                total[status] = total.get(status, 0) + count
        return total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--connections", default="16,64", help="wrk -c (open connections), one run of everything per level"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (threads)")
    parser.add_argument("--team-seconds", type=int, default=60, help="length of a team page run")
    parser.add_argument("--seconds", type=int, default=20, help="length of every other run")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded warm-up per page (0: none)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sequence (noisy machines)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk --timeout in seconds")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--pages", default="", help="only these pages, e.g. hello,bare (the reference always runs)"
    )
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--members", type=int, default=50, help="members per team (at least 3)")
    parser.add_argument("--notes", type=int, default=60, help="notes per team (the list shows 50)")
    parser.add_argument("--invitations", type=int, default=5, help="open invitations per team (at least 1)")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(level) for level in str(args.connections).split(",") if level.strip()]
    except ValueError:
        parser.error("--connections takes numbers separated by commas, e.g. 16,64")
    if not args.levels or min(args.levels) < 1:
        parser.error("--connections needs at least one level of at least 1")
    if min(args.team_seconds, args.seconds, args.timeout) < 1 or args.warmup < 0:
        parser.error("wrk takes whole seconds: --team-seconds, --seconds and --timeout at least 1")
    if args.members < 3 or args.invitations < 1 or args.teams < 1 or args.notes < 1:
        parser.error("need at least 1 team, 3 members, 1 note and 1 invitation")
    return args


# --- the database ----------------------------------------------------------------------------------


def seed(database: BenchDatabase, args: argparse.Namespace, token_hash: str) -> None:
    """The seed rows, one password hash for every user, then VACUUM ANALYZE."""
    params = {
        "password_hash": passwords.hash_password(PASSWORD),
        "teams": args.teams,
        "members": args.members,
        "notes": args.notes,
        "invitations": args.invitations,
        "token_hash": token_hash,
    }
    engine = create_engine(database.admin_url)
    try:
        with engine.begin() as conn:
            for statement in SEED_STATEMENTS:
                conn.execute(text(statement), params)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar_one())


def backend_pids(engine: Engine, database: BenchDatabase) -> list[int]:
    """The PostgreSQL server processes of the app role's connections to the bench database."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE usename = :r AND datname = :d"),
            {"r": database.app_role, "d": database.name},
        )
        return [int(pid) for pid in rows.scalars()]


def forget_rate_limits(run_id: str) -> None:
    """Delete this run's rate-limit counters (the log in) from Redis; they would expire in an hour."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        counters = list(client.scan_iter(match=f"LIMITS:*nyxcore-bench-{run_id}*"))
        if counters:
            client.delete(*counters)
    finally:
        client.close()


# --- the server ------------------------------------------------------------------------------------


def production_environment(database: BenchDatabase, run_id: str) -> dict[str, str]:
    """NYXCORE_ENV=production with valid settings; only what plain-http load testing needs differs."""
    return {
        "NYXCORE_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "NYXCORE_ENCRYPTION_KEYS": generate_key_setting("bench"),
        "DATABASE_URL": database.app_url,
        "MIGRATION_DATABASE_URL": database.owner_url,
        "NYXCORE_APP_ROLE": database.app_role,
        "REDIS_URL": REDIS_URL,
        "PUBLIC_URL": "http://127.0.0.1",
        "CELERY_TASK_DEFAULT_QUEUE": f"nyxcore-bench-{run_id}",  # nothing is queued; kept apart anyway
        # wrk speaks plain http: a Secure cookie would never be sent back.
        "SESSION_COOKIE_SECURE": "false",
        # Counters of this run only, so earlier runs (or tests) sharing the Redis cannot trip them.
        "RATELIMIT_KEY_PREFIX": f"nyxcore-bench-{run_id}",
        # 30 a minute per client address (the default) would answer 429 to all but 30 of wrk's
        # requests, which all come from 127.0.0.1. The limiter still runs (one Redis round trip).
        "RATELIMIT_MAGIC_LINK": "1000000 per minute",
    }


class LoadServer(GunicornServer):
    """GunicornServer (bench/_common.py) serving `app` (bench.reference_app:app) instead of wsgi:app.

    The same command otherwise: the project's gunicorn.conf.py when it exists, then, winning over
    it, the bind address and `workers` sync workers of one thread each. The bare Flask app is served
    by exactly this command too, so the two differ only in the app.
    """

    def __init__(
        self,
        environment: Mapping[str, str],
        *,
        workers: int,
        log_dir: Path,
        app: str = APP,
        name: str = "load",
        ready_path: str = "/api/v1/health",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.ready_path = ready_path
        self.log_path = log_dir / f"gunicorn-{name}.log"
        command = [sys.executable, "-m", "gunicorn"]
        if (ROOT / "gunicorn.conf.py").exists():
            command += ["--config", str(ROOT / "gunicorn.conf.py")]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        command += ["--worker-class", "sync", "--threads", "1", "--log-level", "warning", app]
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
        """Block until `ready_path` answers 200; raise with the server's log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", self.ready_path)
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn ({self.name}) did not start:\n{self.log_tail()}")


def signed_in_cookie(port: int) -> str:
    """Log in once as the owner of team 0 and return the Cookie header a browser would then send.

    The team page is fetched once first: it adds the CSRF secret to the session, as a browser's
    first page view would, so that the measured requests do not each write a new session.
    """
    browser = Browser(port)
    try:
        browser.log_in(OWNER_EMAIL, PASSWORD)
        status, _ = browser.request("GET", "/team/")
        if status != 200:
            raise RuntimeError(f"GET /team/ after logging in answered {status}")
        return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    finally:
        browser.close()


def headers_for(page: Page, cookie: str) -> dict[str, str]:
    # The same User-Agent as the log in: Flask-Login's strong session protection ties the session to it.
    headers = {"User-Agent": USER_AGENT}
    if page.signed_in:
        headers["Cookie"] = cookie
    return headers


def check_page(port: int, page: Page, cookie: str) -> None:
    """One request with exactly the headers wrk will send: it must answer 200 with the page's text."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", page.path, headers=headers_for(page, cookie))
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    finally:
        connection.close()
    if response.status != 200 or page.expect not in body:
        raise RuntimeError(f"{page.shown_path} answered {response.status} without {page.expect!r}")


# --- wrk -------------------------------------------------------------------------------------------


def run_wrk(
    port: int,
    page: Page,
    cookie: str,
    seconds: int,
    args: argparse.Namespace,
    script: Path,
    raw_output: Path | None,
) -> dict[str, Any]:
    """wrk against one page for `seconds` at args.level connections; its summary, saved to `raw_output`."""
    command = ["wrk", f"-t{min(args.threads, args.level)}", f"-c{args.level}", f"-d{seconds:g}s", "--latency"]
    command += ["--timeout", f"{args.timeout:g}s", "-s", str(script)]
    for name, value in headers_for(page, cookie).items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}{page.path}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if raw_output is not None:
        raw_output.write_text(done.stdout + done.stderr)
    result_line = next(
        (line for line in done.stdout.splitlines() if line.startswith("NYXCORE_RESULT ")), None
    )
    if done.returncode != 0 or result_line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(result_line.removeprefix("NYXCORE_RESULT "))
    return result


def measure(
    port: int,
    page: Page,
    cookie: str,
    seconds: float,
    args: argparse.Namespace,
    script: Path,
    raw_output: Path,
    meters: tuple[CpuMeter, CpuMeter],
) -> Run:
    app_meter, db_meter = meters
    app_meter.start()
    db_meter.start()
    summary = run_wrk(port, page, cookie, seconds, args, script, raw_output)
    app_cpu, db_cpu = app_meter.stop(), db_meter.stop()
    requests = int(summary["requests"])
    duration = int(summary["duration_us"]) / 1e6
    socket_errors = sum(int(summary[k]) for k in ("connect", "read", "write", "timeout"))
    return Run(
        page=page.name,
        connections=args.level,
        seconds=duration,
        requests=requests,
        rate=requests / duration,
        p50_ms=int(summary["p50_us"]) / 1000,
        p99_ms=int(summary["p99_us"]) / 1000,
        non_2xx_3xx=int(summary["status"]),
        socket_errors=socket_errors,
        statuses={str(k): int(v) for k, v in dict(summary["statuses"]).items()},
        app_cpu_ms=1000 * app_cpu / max(requests, 1),
        db_cpu_ms=1000 * db_cpu / max(requests, 1),
    )


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout + done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def pages_for(args: argparse.Namespace, token: str) -> list[Page]:
    """The URLs loaded, the reference first; each with the text that proves it rendered."""
    return [
        Page("reference", "the reference", "/bench/ref50", "/bench/ref50", signed_in=False,
             expect="Bench note 0-0"),
        Page("team", "team page /team/", "/team/", "/team/", signed_in=True,
             expect=f"Members ({args.members})"),
        Page("notes", "NyxBook list /notes/", "/notes/", "/notes/", signed_in=True, expect="Bench note 0-0"),
        Page("invite", "magic-link page", f"/invite/{token}", "/invite/<token>", signed_in=False,
             expect="Join Bench team 0"),
        Page("layout", "signed-in layout (info)", "/bench/layout", "/bench/layout", signed_in=True,
             expect="<title>Layout · NyxCore</title>"),
        Page("ref-in", "the reference signed in (info)", "/bench/ref50-signed-in", "/bench/ref50-signed-in",
             signed_in=True, expect="Bench note 0-0"),
        Page("hello", "hello page", "/bench/hello", "/bench/hello", signed_in=False,
             expect="Hello from NyxCore"),
        Page("bare", "bare Flask hello", "/bench/hello", "bare Flask /bench/hello", signed_in=False,
             expect="Hello from Flask", server="bare"),
    ]  # fmt: skip


def wait_until_idle(server: GunicornServer, *, limit: float = 60.0) -> float:
    """Wait until the gunicorn workers stop using CPU; return how long that took.

    When wrk stops, it closes its connections, but the requests it had sent still sit in the listen
    backlog, and each sync worker reads and renders them all (64 of them: more than a second of the
    team page) before it gets to the next run's first request. Without this wait they would slow the
    start of the next run and count in its CPU.
    """
    started = time.monotonic()
    meter = CpuMeter(server.worker_pids)
    while time.monotonic() - started < limit:
        meter.start()
        time.sleep(0.25)
        if meter.stop() < IDLE_CPU_SECONDS:
            break
    return time.monotonic() - started


@dataclass
class Servers:
    """The app's gunicorn and the bare Flask app's, with CPU meters of their workers (and the app's backends)."""

    app: LoadServer
    bare: LoadServer
    meters: dict[str, tuple[CpuMeter, CpuMeter]]

    def of(self, page: Page) -> LoadServer:
        return self.bare if page.server == "bare" else self.app


def run_sequence(
    servers: Servers, pages: list[Page], cookie: str, args: argparse.Namespace, script: Path, out: Path
) -> dict[str, Series]:
    """At args.level connections: warm every page up, then `rounds` rounds of every page, the reference closing each."""
    for page in pages:
        if args.warmup > 0:
            run_wrk(servers.of(page).port, page, cookie, args.warmup, args, script, None)
            wait_until_idle(servers.of(page))
    by_name = {page.name: page for page in pages}
    series = {page.name: Series() for page in pages}
    order = [page.name for page in pages] * args.rounds + ["reference"]
    for number, name in enumerate(order, 1):
        page = by_name[name]
        server = servers.of(page)
        long_run = name == "team" and args.level == QUEUE_CONNECTIONS
        seconds = args.team_seconds if long_run else args.seconds
        raw_output = out / f"wrk-c{args.level}-{number:02d}-{name}.txt"
        run = measure(
            server.port, page, cookie, seconds, args, script, raw_output, servers.meters[page.server]
        )
        run.drain_seconds = wait_until_idle(server)
        series[name].runs.append(run)
        print_run(number, run, page)
    return series


# --- the report ------------------------------------------------------------------------------------


def print_run(number: int, run: Run, page: Page) -> None:
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(run.statuses.items()))
    print(
        f"  c{run.connections} run {number:>2}  {page.name:<9} {run.seconds:5.1f} s {run.rate:7.1f} req/s  "
        f"p50 {run.p50_ms:7.1f} ms  p99 {run.p99_ms:7.1f} ms  errors {run.errors} "
        f"(non-2xx/3xx {run.non_2xx_3xx}, socket {run.socket_errors})  CPU/request gunicorn "
        f"{run.app_cpu_ms:5.2f} ms + postgres {run.db_cpu_ms:5.2f} ms  [{statuses}]  "
        f"backlog drained in {run.drain_seconds:.1f} s",
        flush=True,
    )


def _ratio(numerator: float, denominator: float, digits: int = 2) -> str:
    return f"{numerator / denominator:.{digits}f}" if denominator else "-"


def print_table(level: int, pages: list[Page], series: dict[str, Series]) -> None:
    reference = series["reference"]
    print(
        f"\nc{level:<4} {'page':<10} {'URL':<24} {'runs':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/p50':>8} {'errors':>6} {'ratio':>6} {'CPU ms/req':>10} {'CPU ratio':>9}"
    )
    for page in pages:
        s = series[page.name]
        p50, p99 = s.median("p50_ms"), s.median("p99_ms")
        print(
            f"{'':<5} {page.name:<10} {page.shown_path:<24} {len(s.runs):>4} {s.rate:8.1f} {p50:8.1f} "
            f"{p99:8.1f} {_ratio(p99, p50):>8} {s.errors:>6} {_ratio(s.rate, reference.rate, 3):>6} "
            f"{s.median('cpu_ms'):10.2f} {_ratio(reference.median('cpu_ms'), s.median('cpu_ms'), 3):>9}"
        )


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "BELOW TARGET"


def ratio_verdicts(pages: list[Page], by_level: dict[int, dict[str, Series]]) -> list[str]:
    """Team page and NyxBook list against the reference, and /bench/hello against bare Flask, per level."""
    verdicts = []
    for level, series in by_level.items():
        reference = series["reference"]
        for page in (p for p in pages if p.name in ("team", "notes")):
            rate = series[page.name].rate / reference.rate if reference.rate else 0.0
            cpu = reference.median("cpu_ms") / series[page.name].median("cpu_ms")
            verdicts.append(
                f"{_verdict(min(rate, cpu) >= RATIO_TARGET)}: {page.label} at c{level}: {rate:.3f} x the "
                f"reference's requests/s, {cpu:.3f} x its CPU per request (target >= {RATIO_TARGET} in both)"
            )
        verdicts += signed_in_comparison(pages, level, series)
        if "hello" not in series or "bare" not in series:
            continue
        hello, bare = series["hello"].median("cpu_ms"), series["bare"].median("cpu_ms")
        verdicts.append(
            f"{_verdict(hello <= HELLO_TARGET * bare)}: /bench/hello at c{level}: {hello:.2f} ms CPU per "
            f"request, {hello / bare:.2f} x the bare Flask hello's {bare:.2f} ms (target <= {HELLO_TARGET}; "
            f"requests/s {_ratio(series['hello'].rate, series['bare'].rate)} x)"
        )
    return verdicts


def signed_in_comparison(pages: list[Page], level: int, series: dict[str, Series]) -> list[str]:
    """For information, not a target: the team page and NyxBook against the reference's work on a signed-in
    page (`/bench/ref50-signed-in`), which pays the session load and the layout as they do."""
    if "ref-in" not in series or not series["ref-in"].rate:
        return []
    signed_in = series["ref-in"]
    return [
        f"INFORMATION: {page.label} at c{level}: {series[page.name].rate / signed_in.rate:.3f} x the signed-in "
        f"reference's requests/s, {signed_in.median('cpu_ms') / series[page.name].median('cpu_ms'):.3f} x its CPU "
        "per request"
        for page in pages
        if page.name in ("team", "notes") and series[page.name].rate
    ]


def report(pages: list[Page], by_level: dict[int, dict[str, Series]], args: argparse.Namespace) -> list[str]:
    """Print the tables and the targets; return the verdict lines."""
    for level, series in by_level.items():
        print_table(level, pages, series)
    print(
        "(req/s: all requests / all seconds of that page's runs; p50, p99, CPU: median of its runs; "
        "ratio: req/s over the reference's; CPU ratio: the reference's CPU per request over the page's)"
    )
    verdicts = ratio_verdicts(pages, by_level)
    queue = by_level.get(QUEUE_CONNECTIONS)
    long_runs = [r for r in queue["team"].runs if r.seconds >= 59.5] if queue and "team" in queue else []
    if queue and long_runs:
        errors = sum(r.errors for r in queue["team"].runs)
        verdicts.append(
            f"{_verdict(errors == 0)}: {errors} errors on the team page at {QUEUE_CONNECTIONS} connections "
            f"over {sum(r.seconds for r in queue['team'].runs):.0f} s (target 0 for 60 s)"
        )
    else:
        verdicts.append(f"NOT MEASURED: zero errors for 60 s at c{QUEUE_CONNECTIONS} (not run that long)")
    every = [run for series in by_level.values() for s in series.values() for run in s.runs]
    empty = sorted({f"{run.page} (c{run.connections})" for run in every if not run.requests})
    if empty:
        verdicts.append(f"BELOW TARGET: no response at all in a run of {', '.join(empty)}")
    tails = [(run.p99_ms / run.p50_ms, run.page) for run in every if run.p50_ms and run.connections == 16]
    if tails:
        worst = max(tails)
        verdicts.append(
            f"{_verdict(worst[0] <= TAIL_TARGET)}: p99 within {TAIL_TARGET:g} x p50 in every run at c16 "
            f"(worst {worst[0]:.2f} x, {worst[1]})"
        )
    else:
        verdicts.append("NOT MEASURED: p99 within 4 x p50 at c16 (no run at 16 connections)")
    other: dict[str, int] = {}
    for run in every:
        for status, count in run.statuses.items():
            if status != "200" and count:
                other[status] = other.get(status, 0) + count
    verdicts.append(
        f"{_verdict(not other)}: every response a 200 ({other or 'none other'}; 429s: {other.get('429', 0)})"
    )
    return verdicts


def start_servers(
    database: BenchDatabase, run_id: str, args: argparse.Namespace, out: Path, admin: Engine
) -> Servers:
    """The app and the bare Flask app, each under the same gunicorn command; both ready."""
    environment = production_environment(database, run_id)
    app = LoadServer(environment, workers=args.workers, log_dir=out)
    bare = LoadServer(
        environment, workers=args.workers, log_dir=out, app=BARE_APP, name="bare", ready_path="/bench/hello"
    )
    servers = Servers(app, bare, {})
    try:
        app.wait_ready()
        bare.wait_ready()
    except RuntimeError:
        app.stop()
        bare.stop()
        raise
    servers.meters = {
        "app": (CpuMeter(app.worker_pids), CpuMeter(partial(backend_pids, admin, database))),
        "bare": (CpuMeter(bare.worker_pids), CpuMeter(list)),
    }
    return servers


def run_levels(
    servers: Servers, pages: list[Page], cookie: str, args: argparse.Namespace, script: Path, out: Path
) -> dict[int, dict[str, Series]]:
    by_level = {}
    for level in args.levels:
        args.level = level
        print(f"-- {level} connections", flush=True)
        by_level[level] = run_sequence(servers, pages, cookie, args, script, out)
    return by_level


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # interleave with stderr
    if shutil.which("wrk") is None:
        print(f"wrk is not installed; install it with:\n  {INSTALL_WRK}", file=sys.stderr)
        return 2
    run_id = uuid.uuid4().hex[:8]
    token = secrets.token_urlsafe(32)
    out = OUT / f"load-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    out.mkdir(parents=True)
    script = out / "statuses.lua"
    script.write_text(WRK_SCRIPT)
    print("Load on the main pages under the production configuration (issues 8 and 15)", flush=True)
    with throwaway_database("nyxcore_load") as database:
        admin = create_engine(database.admin_url)
        servers: Servers | None = None
        try:
            print(
                f"machine: {machine_description()}; PostgreSQL {server_version(admin)}; "
                f"Python {platform.python_version()}; {wrk_version()}; load average at start "
                + " ".join(f"{x:.2f}" for x in os.getloadavg())
            )
            seed(database, args, hashlib.sha256(token.encode()).hexdigest())
            print(
                f"data: {args.teams} teams x {args.members} members, {args.notes} notes and "
                f"{args.invitations} open invitations per team; signed-in pages as the owner of team 0"
            )
            wanted = {"reference", *filter(None, args.pages.split(","))}
            pages = [page for page in pages_for(args, token) if not args.pages or page.name in wanted]
            servers = start_servers(database, run_id, args, out, admin)
            print(
                f"servers: gunicorn {APP} and {BARE_APP}, each {args.workers} sync workers x 1 thread with "
                f"gunicorn.conf.py, NYXCORE_ENV=production (rate limits on, in Redis), pool_size {POOL_SIZE}"
            )
            cookie = signed_in_cookie(servers.app.port)
            for page in pages:
                check_page(servers.of(page).port, page, cookie)
            print(
                f"wrk -t{args.threads} -c{','.join(map(str, args.levels))} --latency --timeout {args.timeout:g}s "
                f"-H 'User-Agent: {USER_AGENT}' [-H 'Cookie: session=...' on the signed-in pages]; team page "
                f"{args.team_seconds:g} s at c{QUEUE_CONNECTIONS}, others {args.seconds:g} s, {args.rounds} "
                f"round(s), {args.warmup:g} s unrecorded warm-up per page",
                flush=True,
            )
            by_level = run_levels(servers, pages, cookie, args, script, out)
            connections = len(backend_pids(admin, database))
            verdicts = report(pages, by_level, args)
            print(
                f"app-role connections to PostgreSQL after the runs: {connections} "
                f"({args.workers} sync workers, one request at a time each; pool_size {POOL_SIZE} per process)"
            )
            print(
                "load average at the end "
                + " ".join(f"{x:.2f}" for x in os.getloadavg())
                + f"; wrk outputs and the gunicorn logs: {out.relative_to(ROOT)}"
            )
            for verdict in verdicts:
                print(verdict)
        finally:
            if servers is not None:
                servers.app.stop()
                servers.bare.stop()
            admin.dispose()
            forget_rate_limits(run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
