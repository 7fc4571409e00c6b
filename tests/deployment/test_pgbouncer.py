"""NyxCore behind PgBouncer in transaction pooling mode, the way large installs and hosted PostgreSQL
run it: gunicorn, a Celery worker and beat (tests/deployment/cluster.py) connect to PgBouncer
(Debian's `pgbouncer`, started here as a process with a configuration of this test's own), which
runs every transaction on whichever of its 10 server connections is free.

The tenant context is transaction-local (`SET LOCAL app.… = …` in front of each transaction's
first statement, nyxcore/tenancy.py), so it must stay right when consecutive transactions of one
app connection land on different server connections, and nothing the app does may stay behind on a
server connection for the next client: no `SET` without LOCAL, no server-side prepared statement
(psycopg2 prepares nothing), no advisory lock held past a transaction.

100 clients of 20 teams (5 each) log in, open their team's pages and write notes at the same time;
each checks that its pages show no other team's marker. Then the server connections are inspected.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from nyxcore.roles import TenantRole
from tests.deployment.cluster import Cluster, cluster_environment, log_in, post_from, running_cluster
from tests.helpers import HOST, free_port, rows
from tests.integration.mailserver import MailServer
from tests.live import Browser, LiveServers

if TYPE_CHECKING:  # imported by name, pytest would try to collect it as a test class
    from tests.conftest import TestDatabase

pytestmark = pytest.mark.committed  # other processes read what the fixtures create

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
SERVER_CONNECTIONS = 10
TEAMS, PER_TEAM, ROUNDS = 20, 5, 2
STATS_USER = "nyxcore_stats"  # PgBouncer's own console (SHOW POOLS); no PostgreSQL role
# Parameters PgBouncer itself tracks per client and sets on the server connection it hands out.
TRACKED = {
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
    "intervalstyle",
}
MARKER = re.compile(r"mk[0-9a-f]{10}")


@dataclass
class PgBouncer:
    port: int
    log: Path
    app_url: str  # the app role's DATABASE_URL, through PgBouncer

    def console(self) -> Any:
        conn = psycopg2.connect(host=HOST, port=self.port, user=STATS_USER, dbname="pgbouncer")
        conn.autocommit = True  # the console takes no transactions
        return conn

    def ready(self) -> bool:
        try:
            self.console().close()
        except psycopg2.OperationalError:
            return False
        return True

    def pools(self, database: str) -> dict[str, int]:
        """SHOW POOLS' row for `database`: cl_active, cl_waiting, sv_active, sv_idle, ..."""
        conn = self.console()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW POOLS")
                names = [column.name for column in cursor.description]
                found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()
        return next(row for row in found if row["database"] == database)


def write_pgbouncer_ini(directory: Path, *, port: int, database: TestDatabase) -> Path:
    """A pgbouncer.ini for the test database: transaction pooling, 10 server connections."""
    target = make_url(database.app_url)
    (directory / "userlist.txt").write_text(f'"{database.app_role}" ""\n"{STATS_USER}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{database.name} = host={target.host} port={target.port or 5432} dbname={database.name}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir = {directory}
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
; The test database trusts loopback connections; a real install uses scram-sha-256 and a userlist.
auth_type = trust
auth_file = {directory}/userlist.txt
stats_users = {STATS_USER}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_db_connections = {SERVER_CONNECTIONS}
max_client_conn = 500
"""
    )
    return ini


@pytest.fixture(scope="module")
def pgbouncer(database: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    # PgBouncer refuses to run as root: then it runs as `postgres` (-u), in a folder that user owns.
    as_root = os.geteuid() == 0
    directory = Path(tempfile.mkdtemp(prefix="nyxcore-pgbouncer-"))
    try:
        port = free_port()
        ini = write_pgbouncer_ini(directory, port=port, database=database)
        command = [PGBOUNCER, str(ini)]
        if as_root:
            run_as = "postgres" if "postgres" in {entry.pw_name for entry in pwd.getpwall()} else "nobody"
            account = pwd.getpwnam(run_as)
            for path in (directory, *directory.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            command = [PGBOUNCER, "-u", run_as, str(ini)]
        url = make_url(database.app_url).set(host=HOST, port=port).render_as_string(hide_password=False)
        bouncer = PgBouncer(port=port, log=directory / "pgbouncer.log", app_url=url)
        with LiveServers(tmp_path_factory.mktemp("pgbouncer")) as servers:
            process = servers.spawn(
                "pgbouncer", command, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            )
            servers.wait_until(bouncer.ready, "pgbouncer", watch=[process], log=bouncer.log.read_text)
            yield bouncer
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(
    database: TestDatabase, mail: MailServer, pgbouncer: PgBouncer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    environment = cluster_environment(
        database,
        mail,
        database_url=pgbouncer.app_url,
        # One server, two processes of 8 threads: up to 30 app connections (pool 5 + overflow 10
        # each) and the worker's share the 10 server connections.
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="8",
        GUNICORN_TIMEOUT="60",
        # The limits stay on (Redis); 100 people logging in from one address is this test's load.
        RATELIMIT_ENABLED="true",
        RATELIMIT_LOGIN="1000 per minute",
    )
    log_dir = tmp_path_factory.mktemp("pgbouncer-cluster")
    with running_cluster(environment, log_dir, web=1, workers=1) as running:
        yield running


@dataclass
class Person:
    email: str
    team_id: uuid.UUID
    marker: str
    owner: bool


def make_teams(make_user: Any, add_member: Any) -> list[Person]:
    """20 teams of 5 (an owner and 4 members); every name a page can show carries the team's marker."""
    people = []
    for _ in range(TEAMS):
        marker = f"mk{uuid.uuid4().hex[:10]}"
        owner = make_user(name=f"Owner {marker}")
        people.append(Person(owner.email, owner.team_id, marker, owner=True))
        for n in range(1, PER_TEAM):
            member = make_user(name=f"Member {marker} {n}")
            add_member(owner.team_id, member, TenantRole.MEMBER)
            people.append(Person(member.email, owner.team_id, marker, owner=False))
    return people


def visit(person: Person, url: str, problems: list[str], invitee: str) -> None:
    """A client thread: `session`, with whatever goes wrong (a refused log-in, a timeout) recorded."""
    try:
        session(person, url, problems, invitee)
    except Exception as exc:  # a thread's failure must reach the test, not stderr
        problems.append(f"{person.email}: {exc!r}")


def session(person: Person, url: str, problems: list[str], invitee: str) -> None:
    """One person's session: log in, make the team active, write notes and read the team's pages."""
    browser = Browser(url, timeout=90)

    def check(what: str, status: int, body: str, expected: tuple[int, ...] = (200,)) -> None:
        foreign = set(MARKER.findall(body)) - {person.marker}
        if status not in expected or foreign:
            problems.append(f"{person.email} {what}: {status}, markers of other teams {sorted(foreign)}")

    log_in(browser, person.email)
    if not person.owner:
        reply = post_from(browser, "/team/", "/teams/switch", {"tenant_id": str(person.team_id)})
        check("switch", reply.status, reply.body, (302,))
    for round_ in range(ROUNDS):
        title = f"Note {person.marker} by {person.email} {round_}"
        created = post_from(
            browser, "/notes/new", "/notes/new", {"title": title, "body": f"For {person.marker}"}
        )
        check("new note", created.status, created.body, (302, 303))
        for path in (created.headers["Location"] or "/notes/", "/notes/", "/team/"):
            page = browser.get(path)
            check(path, page.status, page.body)
        if person.marker not in page.body or f"Members ({PER_TEAM})" not in page.body:
            problems.append(f"{person.email}: the team page does not show the own team")
    if person.owner:  # mailed by the worker, through PgBouncer too
        reply = post_from(
            browser, "/team/invitations", "/team/invitations", {"emails": invitee, "role": "viewer"}
        )
        check("invite", reply.status, reply.body)


def watch_pools(
    bouncer: PgBouncer, database: str, stop: threading.Event, samples: list[dict[str, int]]
) -> None:
    while not stop.is_set():
        samples.append(bouncer.pools(database))
        stop.wait(0.2)


def test_100_clients_of_20_teams_through_transaction_pooling_see_only_their_own_team(
    database: TestDatabase,
    cluster: Cluster,
    pgbouncer: PgBouncer,
    mail: MailServer,
    make_user: Any,
    add_member: Any,
    admin_engine: Any,
) -> None:
    people = make_teams(make_user, add_member)
    invitees = {p.marker: f"invitee-{p.marker}@example.com" for p in people if p.owner}
    problems: list[str] = []
    samples: list[dict[str, int]] = []
    stop = threading.Event()
    monitor = threading.Thread(target=watch_pools, args=(pgbouncer, database.name, stop, samples))
    monitor.start()
    started = time.monotonic()
    clients = [
        threading.Thread(target=visit, args=(person, cluster.urls[0], problems, invitees[person.marker]))
        for person in people
    ]
    try:
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        stop.set()
        monitor.join()
    elapsed = time.monotonic() - started
    assert problems == []

    # Every client's notes were written to its own team.
    written = rows(admin_engine, "SELECT tenant_id, title FROM notes")
    assert len(written) == len(people) * ROUNDS
    by_team = {p.team_id: p.marker for p in people}
    assert all(by_team[row.tenant_id] in row.title for row in written)

    # The worker delivered each owner's invitation through PgBouncer as well.
    cluster.wait_until(lambda: {str(m["To"]) for m in mail.messages} >= set(invitees.values()), "invitations")

    # No 5xx and no database error in any log; PgBouncer never ran out or refused.
    web_log = "\n".join(p.log() for p in cluster.processes())
    assert not re.search(r'" 5\d\d ', web_log), re.findall(r'.*" 5\d\d .*', web_log)[:5]
    for word in ("Traceback", "prepared statement", "psycopg2.", "OperationalError", "InternalError"):
        assert word not in web_log, word
    bouncer_log = pgbouncer.log.read_text()
    assert not re.search(r"\b(ERROR|WARNING|FATAL)\b", bouncer_log), re.findall(
        r".*\b(?:ERROR|WARNING|FATAL)\b.*", bouncer_log
    )[:5]

    # Transaction pooling did multiplex: more app connections at once than server connections.
    most_clients = max(s["cl_active"] + s["cl_waiting"] for s in samples)
    most_servers = max(s["sv_active"] + s["sv_idle"] + s["sv_used"] for s in samples)
    assert most_servers <= SERVER_CONNECTIONS < most_clients, (most_clients, most_servers)
    print(
        f"\n{len(people)} clients in {elapsed:.1f} s; up to {most_clients} app connections on {most_servers} server connections"
    )

    assert_server_connections_are_clean(pgbouncer, database)


def assert_server_connections_are_clean(bouncer: PgBouncer, database: TestDatabase) -> None:
    """Each of PgBouncer's server connections, taken at once: no tenant setting, prepared statement,
    advisory lock or session-level SET left behind by the app."""
    connections = [
        psycopg2.connect(host=HOST, port=bouncer.port, user=database.app_role, dbname=database.name)
        for _ in range(SERVER_CONNECTIONS)
    ]
    try:
        backends = set()
        for conn in connections:  # each holds its transaction open: its own server connection
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_backend_pid(), current_setting('app.tenant_id', true),"
                    " current_setting('app.user_id', true),"
                    " (SELECT count(*) FROM pg_prepared_statements),"
                    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
                    " ARRAY(SELECT lower(name) FROM pg_settings WHERE source = 'session')"
                )
                pid, tenant, user, prepared, advisory, session_settings = cursor.fetchone()
            backends.add(pid)
            assert (tenant or "", user or "", prepared, advisory) == ("", "", 0, 0), pid
            assert set(session_settings) <= TRACKED, session_settings
        assert len(backends) == SERVER_CONNECTIONS
    finally:
        for conn in connections:
            conn.close()
