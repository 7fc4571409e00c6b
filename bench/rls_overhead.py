"""What row-level security costs on the read-heavy team page (issue 3).

    .venv/bin/python bench/rls_overhead.py [--teams 200] [--members 50] [--clients 8] [--rounds 16] [--seconds 2]

Creates its own database and roles (an owner, the app role without BYPASSRLS, and a reference role
WITH BYPASSRLS granted the same DML), migrates it, seeds teams x members through plain SQL, and serves
GET /team/ for logged-in members from two gunicorn servers running the same code: one connects as the
app role (RLS enforced), the other as the reference role (RLS bypassed). One client process with a
thread per client drives them in alternating rounds (A/B, then B/A), so machine noise falls on both.
Each round also records the CPU time per request of the variant's gunicorn workers and PostgreSQL
backends (from /proc), a cost figure that other load on a shared machine disturbs far less than
requests/s. It also counts the SQL round trips of one request in-process, both as SQLAlchemy sees
them and on the wire, and shows that the tenant context travels in the same message as the first query.

Prints requests/s for both, the ratio RLS/bypass, and PASS (>= 0.95) or BELOW TARGET. Always exits 0
unless the benchmark itself failed. Drops its database and roles at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import textwrap
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import (
    SEED_TEAM_STATEMENTS,
    BenchDatabase,
    CpuMeter,
    GunicornServer,
    WireCounter,
    app_config,
    app_environment,
    csrf_token_in,
    load_generator,
    machine_description,
    throwaway_database,
)
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from nyxcore import create_app, passwords
from nyxcore.dbroles import grant_app_privileges
from nyxcore.extensions import db as _db

TARGET = 0.95
PAGE = "/team/"
PASSWORD = "correct horse battery staple"  # noqa: S105 (the seeded users of a throwaway database)
MEMBER_INDEX = 5  # the seeded member whose session the clients use; role 'member'
WARMUP_SECONDS = 2.0
VARIANTS = ("rls", "bypass")

SEED_STATEMENTS = SEED_TEAM_STATEMENTS


@dataclass
class RoundTrips:
    statements: list[str]  # as SQLAlchemy's before_cursor_execute sees them (context prefix included)
    wire: list[str]  # query messages psycopg2 sent, one per round trip


@dataclass
class Series:
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(r["requests"] for r in self.rounds) / sum(r["elapsed"] for r in self.rounds)

    @property
    def errors(self) -> int:
        return int(sum(r["errors"] for r in self.rounds))

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--members", type=int, default=50, help="members per team (at least 6)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per variant")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round of one variant")
    args = parser.parse_args(argv)
    if args.members <= MEMBER_INDEX:
        parser.error(f"--members must be more than {MEMBER_INDEX}")
    return args


def grant_reference_role(database: BenchDatabase, role: str) -> None:
    """The BYPASSRLS reference role gets exactly the app role's privileges."""
    engine = create_engine(database.admin_url)
    try:
        with engine.begin() as conn:
            grant_app_privileges(conn, role)
    finally:
        engine.dispose()


def seed(database: BenchDatabase, *, teams: int, members: int) -> None:
    """teams x members users and memberships, one password hash for all, then VACUUM ANALYZE."""
    password_hash = passwords.hash_password(PASSWORD)
    engine = create_engine(database.admin_url)
    try:
        with engine.begin() as conn:
            for statement in SEED_STATEMENTS:
                conn.execute(
                    text(statement), {"password_hash": password_hash, "teams": teams, "members": members}
                )
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def client_emails(*, teams: int, clients: int) -> list[str]:
    """One member per client, in teams spread over the whole range."""
    return [f"user{i * teams // clients}-{MEMBER_INDEX}@bench.example" for i in range(clients)]


def count_round_trips(database: BenchDatabase, email: str) -> RoundTrips:
    """One GET of the page in-process, as the app role, through a relay that counts query messages."""
    counter = WireCounter(database.app_url)
    app = create_app(app_config(database, counter.url(database.app_url)))
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Registered after the tenancy event, so it sees the statement with the context prepended.
        statements.append(statement)

    try:
        with app.app_context():
            event.listen(_db.engine, "before_cursor_execute", record)
        client = app.test_client()
        token = csrf_token_in(client.get("/auth/login").get_data(as_text=True))
        login = client.post("/auth/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
        assert login.status_code == 302, login.status_code
        assert client.get(PAGE).status_code == 200  # warm: pooled connection open, templates compiled
        statements.clear()
        counter.take()
        response = client.get(PAGE)
        assert response.status_code == 200, response.status_code
        return RoundTrips(statements=list(statements), wire=counter.take())
    finally:
        with app.app_context():
            _db.engine.dispose()
        counter.close()


def _ask(pipe: Connection, *command: Any) -> Any:
    pipe.send(command)
    status, result = pipe.recv()
    if status != "ok":
        raise RuntimeError(f"load generator: {result}")
    return result


def backend_pids(engine: Engine, database: BenchDatabase, role: str) -> list[int]:
    """The server processes of `role`'s connections to the bench database."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE usename = :r AND datname = :d"),
            {"r": role, "d": database.name},
        )
        return [int(pid) for pid in rows.scalars()]


def run_load(database: BenchDatabase, reference_role: str, args: argparse.Namespace) -> dict[str, Series]:
    """Both servers up, clients logged in to both, then alternating rounds; returns each variant's rounds.

    Besides requests/s, each round records the CPU time per request of the variant's gunicorn workers
    and of their PostgreSQL backends: a cost figure that other load on the machine disturbs far less.
    """
    roles = {"rls": database.app_role, "bypass": reference_role}
    series = {variant: Series() for variant in VARIANTS}
    context = multiprocessing.get_context("spawn")
    pipe, child_pipe = context.Pipe()
    generator = context.Process(target=load_generator, args=(child_pipe,), daemon=True)
    admin = create_engine(database.admin_url)
    with tempfile.TemporaryDirectory(prefix="nyxcore-bench-") as log_dir:
        servers = {
            variant: GunicornServer(
                variant,
                app_environment(database, database.url(roles[variant])),
                workers=args.workers,
                log_dir=Path(log_dir),
            )
            for variant in VARIANTS
        }
        app_cpu = {variant: CpuMeter(servers[variant].worker_pids) for variant in VARIANTS}
        db_cpu = {
            variant: CpuMeter(partial(backend_pids, admin, database, roles[variant])) for variant in VARIANTS
        }
        generator.start()
        try:
            for server in servers.values():
                server.wait_ready()
            emails = client_emails(teams=args.teams, clients=args.clients)
            for variant, server in servers.items():
                _ask(pipe, "login", variant, server.port, emails, PASSWORD, PAGE, f"Members ({args.members})")
            for variant in VARIANTS:
                _ask(pipe, "run", variant, PAGE, WARMUP_SECONDS)
            for number in range(args.rounds):
                order = VARIANTS if number % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    app_cpu[variant].start()
                    db_cpu[variant].start()
                    result = _ask(pipe, "run", variant, PAGE, args.seconds)
                    requests = max(result["requests"], 1)
                    result["app_cpu_ms"] = 1000 * app_cpu[variant].stop() / requests
                    result["db_cpu_ms"] = 1000 * db_cpu[variant].stop() / requests
                    series[variant].rounds.append(result)
                    print(
                        f"  round {number + 1:>2} {variant:<6} {result['rate']:7.1f} req/s  "
                        f"p50 {result['p50_ms']:6.1f} ms  p95 {result['p95_ms']:6.1f} ms  "
                        f"CPU/request: gunicorn {result['app_cpu_ms']:5.2f} ms, "
                        f"postgres {result['db_cpu_ms']:5.2f} ms  errors {int(result['errors'])}",
                        flush=True,
                    )
        finally:
            if generator.is_alive():
                with suppress(OSError, EOFError, RuntimeError):
                    _ask(pipe, "stop")
                generator.join(10)
                if generator.is_alive():
                    generator.terminate()
                    generator.join()
            for server in servers.values():
                server.stop()
            admin.dispose()
    return series


def server_version(database: BenchDatabase) -> str:
    engine = create_engine(database.admin_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def _short(sql: str, width: int = 150) -> str:
    return textwrap.shorten(" ".join(sql.split()), width, placeholder=" ...")


def report_round_trips(trips: RoundTrips) -> None:
    carrying = sum("SET LOCAL app.tenant_id" in s for s in trips.statements)
    print(f"SQL round trips for one GET {PAGE} (in-process, app role):")
    print(
        f"  {len(trips.statements)} statements through SQLAlchemy (before_cursor_execute), "
        f"{carrying} of them carrying the tenant context in front of their query;"
    )
    overhead = {"SELECT 1": "pool pre-ping", "BEGIN": "BEGIN", "COMMIT": "COMMIT"}
    extra = ", ".join(f"{trips.wire.count(q)} {name}" for q, name in overhead.items() if q in trips.wire)
    print(f"  {len(trips.wire)} query messages on the wire, each one round trip ({extra} among them):")
    for number, query in enumerate(trips.wire, 1):
        print(f"    {number}. {_short(query)}")
    first = trips.statements[0] if trips.statements else ""
    context, _, query = first.partition(";")
    print(
        "  first statement of the transaction, one message (the user loader runs before the team is known):"
    )
    print(f"    context: {context.strip()};")
    print(f"    query:   {_short(query, 110)}")


def report_load(series: dict[str, Series], args: argparse.Namespace) -> float:
    """Print the figures; return the throughput ratio RLS/bypass."""
    rls, bypass = series["rls"], series["bypass"]
    ratio = rls.rate / bypass.rate
    pairs = [a["rate"] / b["rate"] for a, b in zip(rls.rounds, bypass.rounds, strict=True)]
    print(
        f"requests/s over {args.rounds} rounds x {args.seconds:g} s each "
        f"({args.clients} clients; per variant {args.workers} gunicorn sync workers, one thread each):"
    )
    for name, values in (("RLS (app role)", rls), ("bypass (BYPASSRLS)", bypass)):
        print(
            f"  {name:<19} {values.rate:7.1f} req/s   median p50 {values.median('p50_ms'):.1f} ms, "
            f"p95 {values.median('p95_ms'):.1f} ms; median CPU/request gunicorn "
            f"{values.median('app_cpu_ms'):.2f} ms + postgres {values.median('db_cpu_ms'):.2f} ms; "
            f"errors {values.errors}"
        )
    print(
        f"ratio RLS/bypass (requests/s): {ratio:.3f}  (per round {min(pairs):.3f} .. {max(pairs):.3f}, "
        f"median {statistics.median(pairs):.3f})"
    )
    # The app code is the same in both variants, so the gunicorn side is pooled; what RLS adds is
    # the difference in PostgreSQL CPU, taken round by round (each pair ran back to back).
    app_ms = statistics.median([r["app_cpu_ms"] for r in rls.rounds + bypass.rounds])
    extra = [a["db_cpu_ms"] - b["db_cpu_ms"] for a, b in zip(rls.rounds, bypass.rounds, strict=True)]
    extra_ms = statistics.median(extra)
    base_ms = app_ms + bypass.median("db_cpu_ms")
    print(
        f"RLS adds {extra_ms:.2f} ms of PostgreSQL CPU per request (median of per-round differences, "
        f"{sum(e > 0 for e in extra)}/{len(extra)} rounds positive) to {base_ms:.2f} ms of CPU per request: "
        f"CPU-based ratio {base_ms / (base_ms + extra_ms):.3f} "
        f"({'at or above' if base_ms / (base_ms + extra_ms) >= TARGET else 'below'} the target)"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("RLS overhead on GET /team/ (issue 3)", flush=True)
    with throwaway_database("nyxcore_bench", extra_roles={"bypass": "BYPASSRLS"}) as database:
        (reference_role,) = database.extra_roles
        print(f"machine: {machine_description()}, PostgreSQL {server_version(database)}")
        grant_reference_role(database, reference_role)
        seed(database, teams=args.teams, members=args.members)
        print(
            f"data: {args.teams} teams x {args.members} members "
            f"({args.teams * args.members} users); page shows 50 members, clients log in as members"
        )
        trips = count_round_trips(database, client_emails(teams=args.teams, clients=1)[0])
        report_round_trips(trips)
        series = run_load(database, reference_role, args)
        ratio = report_load(series, args)
    print(f"{'PASS' if ratio >= TARGET else 'BELOW TARGET'} (target ratio >= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
