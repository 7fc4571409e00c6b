"""A deployment of its own, for the fault tests and the soak: PostgreSQL and Redis servers that a test
may stop and restart without disturbing anything else, and NyxCore running on them as in production.

    with own_services(work_dir) as services:           # initdb + pg_ctl, redis-server, an SMTP server
        with running_stack(services, log_dir) as stack:  # gunicorn (gunicorn.conf.py), worker, beat
            browser = stack.browser(stack.accounts[0])   # logged in over HTTP, as a client address of its own
            ...
            services.postgres.restart(); services.redis.restart(); services.mail.stop() ...

The PostgreSQL cluster lives in a temporary folder owned by the `postgres` OS user when the tests
run as root (PostgreSQL refuses to run as root), listens on a free loopback port and keeps its
socket in that folder. Its database, owner and app roles are made and migrated as tests/conftest.py
makes the shared test database (`create_database`). Redis runs without persistence, so a restart
loses what it held (queued tasks, rate-limit counters): the worst case for the outbox.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from bench._common import Browser, csrf_token_in
from nyxcore import create_app
from tests.conftest import PASSWORD, Account, TestDatabase, create_account, create_database, test_config
from tests.deployment.cluster import CELERY_WORKER, Cluster, cluster_environment, running_cluster
from tests.helpers import HOST, free_port
from tests.integration.mailserver import MailServer, running_mail_server
from tests.live import LiveServers, Process

PG_BIN = Path(os.environ.get("NYXCORE_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
COMMAND_TIMEOUT = 60


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` OS user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster of its own (initdb), started and stopped with pg_ctl."""

    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
        options = [
            f"-p {self.port}",
            f"-k {self.directory}",
            f"-c listen_addresses={HOST}",
            # Throwaway data: no waiting for the disk.
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off",
        ]
        self._ctl("start", "-l", str(self.directory / "postgres.log"), "-o", " ".join(options))

    def _ctl(self, action: str, *options: str) -> None:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", *options, action]
        result = subprocess.run(
            _as_postgres(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {action} failed: {result.stdout}{result.stderr}\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop at once: open transactions are rolled back, connections closed (`-m fast`)."""
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._ctl("start", "-l", str(self.directory / "postgres.log"))  # with the options it last ran with

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast", "-l", str(self.directory / "postgres.log"))

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "postgres.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclass
class RedisServer:
    """redis-server on a free port without persistence, under the LiveServers harness."""

    servers: LiveServers
    directory: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None
    starts: int = 0

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self) -> None:
        self.starts += 1
        command = [REDIS_SERVER, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory)]
        self.process = self.servers.spawn(f"redis-{self.starts}", command, env={"PATH": "/usr/bin:/bin"})
        self.servers.wait_until(
            lambda: "Ready to accept connections" in self.log(), "redis-server", watch=[self.process]
        )

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.group, signal.SIGKILL)  # a crash: nothing saved, nothing handed over
            self.process.popen.wait(timeout=10)
            self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@dataclass
class OwnServices:
    postgres: PostgresCluster
    redis: RedisServer
    mail: MailServer
    database: TestDatabase
    servers: LiveServers

    def admin_engine(self) -> Engine:
        """A superuser engine on the app's database (for looking under row-level security)."""
        return create_engine(self.database.admin_url, pool_pre_ping=True)


@contextlib.contextmanager
def own_services(log_dir: Path) -> Iterator[OwnServices]:
    """A PostgreSQL cluster (migrated app database), a Redis server and an SMTP server of their own."""
    directory = Path(tempfile.mkdtemp(prefix="nyxcore-cluster-"))  # /tmp: reachable by `postgres`
    postgres = PostgresCluster(directory)
    try:
        postgres.create()
        database = create_database(postgres.admin_url)
        with LiveServers(log_dir) as servers, running_mail_server() as mail:
            redis = RedisServer(servers, directory)
            redis.start()
            yield OwnServices(postgres, redis, mail, database, servers)
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            postgres.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# NyxCore on them: gunicorn, a Celery worker and beat (tests/deployment/cluster.py), as in production.


@dataclass
class Stack:
    services: OwnServices
    cluster: Cluster
    environment: dict[str, str]
    port: int
    accounts: list[Account]
    workers_started: int = 1
    browsers: list[Browser] = field(default_factory=list)
    _addresses: Iterator[int] = field(default_factory=lambda: iter(range(1, 60_000)))

    @property
    def web(self) -> Process:
        return self.cluster.web[0]

    @property
    def worker(self) -> Process:
        return self.cluster.workers[-1]

    def start_worker(self) -> Process:
        """A new Celery worker (prefork, 2 processes), once it consumes from the queue."""
        self.workers_started += 1
        name = f"worker-{self.workers_started}"
        command = [*CELERY_WORKER, "--hostname", f"{name}-{self.cluster.queue}@%h"]
        worker = self.cluster.servers.spawn(name, command, env=self.environment)
        self.cluster.workers.append(worker)
        self.cluster.wait_until(lambda: " ready." in worker.log(), f"the Celery {name}")
        return worker

    def kill_worker(self) -> None:
        """SIGKILL to the worker and its pool processes: no shutdown, no acknowledgement, no QUIT."""
        worker = self.cluster.workers.pop()
        os.killpg(worker.group, signal.SIGKILL)
        worker.popen.wait(timeout=10)

    def client_address(self) -> str:
        """A client address of its own (nginx's X-Forwarded-For), so per-client limits stay per client."""
        n = next(self._addresses)
        return f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"

    def browser(self, account: Account | None = None) -> Browser:
        """An HTTP client with a client address of its own, logged in as `account` if given."""
        browser = Browser(self.port, headers={"X-Forwarded-For": self.client_address()})
        self.browsers.append(browser)
        if account is not None:
            browser.log_in(account.email, PASSWORD)
        return browser

    def close_browsers(self) -> None:
        while self.browsers:
            self.browsers.pop().close()

    def check_alive(self) -> None:
        for process in self.cluster.processes():
            process.check_alive()


def make_accounts(database: TestDatabase, count: int) -> list[Account]:
    """`count` verified users, each the owner of a personal team, made through the service."""
    app = create_app(test_config(database))
    tag = uuid.uuid4().hex[:6]
    return [create_account(app, f"Fault {n}", f"fault{n}-{tag}@example.com") for n in range(count)]


@contextlib.contextmanager
def running_stack(
    services: OwnServices, log_dir: Path, *, accounts: int = 4, **overrides: str
) -> Iterator[Stack]:
    """gunicorn (gunicorn.conf.py, 2 workers x 4 threads), a Celery worker and beat on `services`."""
    environment = cluster_environment(
        services.database,
        services.mail,
        REDIS_URL=services.redis.url(),
        SMTP_TIMEOUT="5",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="4",
        # The tests invite hundreds: the daily allowances are not what they test.
        INVITATIONS_PER_TEAM_PER_HOUR="100000",
        INVITATIONS_PER_USER_PER_DAY="100000",
        INVITATIONS_PER_INSTANCE_PER_DAY="100000",
        **overrides,
    )
    with running_cluster(environment, log_dir, web=1, workers=1) as cluster:
        port = int(cluster.urls[0].rsplit(":", 1)[1])
        yield Stack(services, cluster, environment, port, make_accounts(services.database, accounts))


# ---------------------------------------------------------------------------------------------------
# Reading what happened.


@dataclass
class Outcome:
    """One request: when it started and ended (monotonic), its status (0: no answer) and body."""

    started: float
    ended: float
    status: int
    body: bytes


def form_token(browser: Browser, path: str = "/team/invitations") -> str:
    """The CSRF token of the browser's session (one per session: fetched once, then reused)."""
    status, page = browser.request("GET", path)
    assert status == 200, f"GET {path} answered {status}"
    return csrf_token_in(page.decode())


def timed_request(browser: Browser, method: str, path: str, form: dict[str, str] | None = None) -> Outcome:
    started = time.monotonic()
    try:
        status, body = browser.request(method, path, form)
    except Exception as error:  # no answer: refused, reset, http.client's protocol errors
        browser.close()
        return Outcome(started, time.monotonic(), 0, repr(error).encode())
    return Outcome(started, time.monotonic(), status, body)


class Load:
    """Threads sending requests in a loop until stopped; every outcome is kept."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def run(self, step: Any, count: int) -> None:
        """Start `count` threads, each calling `step(index)` (which returns an Outcome) in a loop."""

        def loop(index: int) -> None:
            while not self._stop.is_set():
                outcome = step(index)
                with self._lock:
                    self.outcomes.append(outcome)

        for index in range(count):
            thread = threading.Thread(target=loop, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return sorted(self.outcomes, key=lambda outcome: outcome.started)
