"""How fast invitation emails travel from the service through Celery to SMTP (issue 5).

    .venv/bin/python bench/email_pipeline.py [--invitations 500] [--batch 50] [--trivial 2000]
        [--rounds 3] [--pool prefork] [--concurrency 4] [--prefetch N] [--redis-url redis://127.0.0.1:6379/12]

Creates its own database and roles and migrates it; starts the SMTP sink of
tests/integration/mailserver.py (a real aiosmtpd server in a process of its own that counts what it
accepts and keeps each Message-ID and recipient, parsing nothing, and offers PIPELINING as production
relays do) on a free loopback port, and a real worker, `celery -A worker worker`, as a subprocess with
the environment production would give it (the app role, SMTP pointed at that server), on a Redis
database of its own and a queue unique to the run.
The worker is prefork with 4 processes by default: the work per email is mostly Python on the CPU
(writing the message, SQLAlchemy), which prefork spreads over both cores where threads share
one GIL; 4 rather than 2 so that one process's wait for SMTP or PostgreSQL leaves the CPU to another.

Each round has two parts, run in alternating order (A/B, then B/A) so machine noise falls on both:
- emails: with the worker's consumer paused (remote control: cancel_consumer), an admin of a team
  invites `--invitations` addresses through `invitations.invite_many` in batches of `--batch`, each
  batch the way a request does it (app context, tenant context, service, `db.session.commit()`,
  `mail.dispatch_queued()`); the time spent there per invitation is the enqueue cost. Then the
  consumer resumes, and the clock runs until the SMTP server has accepted the last message.
- trivial: with the consumer paused, `--trivial` no-op tasks (each only INCRs a counter in Redis, so
  that the bench can tell when all are done) are published on the same Celery app and queue; then the
  consumer resumes, and the clock runs until the counter reaches the number sent.
While the clock runs, the CPU time of each party (worker processes, their PostgreSQL backends, Redis,
the SMTP sink, this process) is read from /proc: per item, that is what the rates come
down to when the machine is the limit, and it is much steadier than rates on a shared machine.

Prints emails/s, trivial tasks/s, their ratio, the CPU per item, the enqueue cost per invitation, and
PASS (ratio >= 0.5) or BELOW TARGET. Then it counts the SQL round trips of one `mail.deliver()` on the
wire and times its parts in-process, to show where a message's time goes. Always exits 0 unless the
benchmark itself failed. Drops its database and roles, stops the worker and the SMTP server, and
deletes the Redis keys it created, in `finally`.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import kombu.pools
import redis
from _common import (
    ROOT,
    BenchDatabase,
    CpuMeter,
    WireCounter,
    app_environment,
    child_pids,
    machine_description,
    throwaway_database,
)
from aiosmtpd import __version__ as aiosmtpd_version
from celery import __version__ as celery_version
from celery import current_app as celery  # the app of the latest create_app (celery_init_app)
from celery import shared_task
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore import create_app, tenancy
from nyxcore.config import load_config
from nyxcore.extensions import db, keyring
from nyxcore.models import TenantMember, User
from nyxcore.roles import TenantRole
from nyxcore.services import accounts, invitations, mail, teams
from nyxcore.services.mail_transports import Message
from nyxcore.tasks import mail_settings

# tests/ is not an installed package; its SMTP server helper is reused as it is.
sys.path.append(str(ROOT))
from tests.integration.mailserver import MailSink, running_mail_sink

TARGET = 0.5
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"  # the tests use db 15; a benchmark keeps out of their way
PASSWORD = "correct horse battery staple"  # noqa: S105 (users of a throwaway database)
TRIVIAL_TASK = "bench.email_pipeline.count_noop"
# Enough for every worker process to have opened its database and SMTP connections before the clock
# runs, whether each task carries one message or a request's fifty.
WARMUP_INVITATIONS = 200
WARMUP_TRIVIAL = 200
PARTS = ("emails", "trivial")


# --- The trivial task ----------------------------------------------------------------------------

_counter_clients: dict[int, redis.Redis] = {}


def _counter_client() -> redis.Redis:
    """One Redis client per process (a prefork child must not share its parent's sockets)."""
    client = _counter_clients.get(os.getpid())
    if client is None:
        client = _counter_clients[os.getpid()] = redis.Redis.from_url(celery.conf.broker_url)
    return client


@shared_task(name=TRIVIAL_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def count_noop(counter_key: str) -> None:
    """The trivial task: nothing but counting itself, so that the bench knows when all have run."""
    _counter_client().incr(counter_key)


# --- Redis: a database of the bench's own, left as it was found ---------------------------------


class RedisScratch:
    """The bench's Redis database and queue: emptied of the queue's messages at the start, and left as
    it was found at the end (every key created meanwhile is deleted: queue, bindings, unacked, counters).
    """

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.client = redis.Redis.from_url(url)
        stale = self.client.keys(f"{queue}*")  # the queue (and its priority lists), were it left over
        if stale:
            self.client.delete(*stale)
        self.preexisting = set(self.client.keys("*"))

    def counter_key(self, name: str) -> str:
        return f"{self.queue}:done:{name}"

    def count(self, key: str) -> int:
        value = self.client.get(key)
        return int(value) if value is not None else 0

    def clean(self) -> int:
        """Delete the keys this run created (queue, bindings, unacked, counters); returns how many."""
        created = [key for key in self.client.keys("*") if key not in self.preexisting]
        if created:
            self.client.delete(*created)
        return len(created)

    def close(self) -> None:
        self.client.close()


# --- The worker ----------------------------------------------------------------------------------


class CeleryWorker:
    """`celery -A worker worker` in a session of its own; paused and resumed by remote control."""

    def __init__(self, environment: dict[str, str], *, pool: str, concurrency: int, log_dir: Path) -> None:
        self.hostname = f"bench-email-{uuid.uuid4().hex[:8]}@localhost"
        self.queue = environment["CELERY_TASK_DEFAULT_QUEUE"]
        self.log_path = log_dir / "celery-worker.log"
        self.command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "worker",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            self.hostname,
            "--include",
            "email_pipeline",  # registers the trivial task (bench/ is on PYTHONPATH)
            "--loglevel",
            "WARNING",
        ]
        python_path = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env={**os.environ, **environment, "PYTHONPATH": python_path},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the worker answers a ping; raise with its log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if celery.control.ping(destination=[self.hostname], timeout=0.5):
                return
        raise RuntimeError(f"the Celery worker did not start:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The worker's main process and its pool processes (prefork)."""
        return [self.process.pid, *child_pids(self.process.pid)]

    def pause(self) -> None:
        """Stop taking messages from the queue (prefetched ones, if any, still run)."""
        self._control("cancel_consumer")

    def resume(self) -> None:
        self._control("add_consumer")

    def _control(self, command: str) -> None:
        replies = getattr(celery.control, command)(
            self.queue, destination=[self.hostname], reply=True, timeout=5
        )
        if not replies:
            raise RuntimeError(f"the worker did not answer {command}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: finish what runs, ack, QUIT the SMTP connections); kill it if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # The prefork children share the worker's session (its id is the worker's pid, not yet reaped).
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_worker(
    environment: dict[str, str], args: argparse.Namespace, log_dir: Path
) -> Iterator[CeleryWorker]:
    """A started, ready worker for the block; stopped (and waited for) in finally."""
    worker = CeleryWorker(environment, pool=args.pool, concurrency=args.concurrency, log_dir=log_dir)
    try:
        worker.wait_ready()
        print(f"worker: {' '.join(worker.command[1:])}", flush=True)
        yield worker
    finally:
        worker.stop()
        problems = [
            line for line in worker.log_tail(200).splitlines() if "ERROR" in line or "Traceback" in line
        ]
        if problems:
            print(f"the worker logged {len(problems)} error line(s):\n{worker.log_tail()}")


def forget_broker_connections() -> None:
    """Drop the Celery app's cached broker connections, so none outlives the bench's Redis keys."""
    kombu.pools.reset()  # type: ignore[no-untyped-call]
    app = celery._get_current_object()
    app._pool = None
    app.__dict__.pop("amqp", None)


# --- The app -------------------------------------------------------------------------------------


def bench_environment(
    database: BenchDatabase, *, redis_url: str, queue: str, smtp: MailSink, prefetch: int | None
) -> dict[str, str]:
    """The environment shared by the bench process (the web side) and the worker."""
    environment = {
        **app_environment(database, database.app_url),
        "REDIS_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "NYXCORE_ENCRYPTION_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
        # The per-team hourly allowance is checked (it is part of the service's cost) but set high.
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_STORAGE_URI": "memory://",
        "INVITATIONS_PER_TEAM_PER_HOUR": "1000000",
        # Likewise the daily allowances (one inviter sends every invitation of the run).
        "INVITATIONS_PER_USER_PER_DAY": "1000000",
        "INVITATIONS_PER_INSTANCE_PER_DAY": "1000000",
    }
    if prefetch is not None:
        environment["CELERY_PREFETCH_MULTIPLIER"] = str(prefetch)
    return environment


@dataclass(frozen=True)
class Admin:
    user_id: uuid.UUID
    tenant_id: uuid.UUID


def create_admin(app: Flask) -> Admin:
    """An owner with a team, and an admin of that team (the inviter), through the services."""
    with app.app_context():
        owner_id, team_id, admin_id, admin_team = (uuid.uuid4() for _ in range(4))
        with tenancy.tenant_context(user_id=owner_id, tenant_id=team_id):
            accounts.register_user(
                user_id=owner_id, team_id=team_id, name="Olive Owner", email="owner@bench.example", password=PASSWORD
            )
            db.session.commit()
        with tenancy.tenant_context(user_id=admin_id, tenant_id=admin_team):
            accounts.register_user(
                user_id=admin_id,
                team_id=admin_team,
                name="Ada Admin",
                email="admin@bench.example",
                password=PASSWORD,
                verified=True,  # an unverified account may not invite
            )
            db.session.commit()
        with tenancy.tenant_context(user_id=owner_id, tenant_id=team_id):
            db.session.add(TenantMember(tenant_id=team_id, user_id=admin_id, role=TenantRole.ADMIN))
            db.session.commit()
        db.session.remove()
    return Admin(admin_id, team_id)


# --- Enqueueing ----------------------------------------------------------------------------------


@dataclass
class EnqueueCost:
    invitations: int = 0
    service: float = 0.0  # seconds in invite_many
    commit: float = 0.0
    dispatch: float = 0.0

    @property
    def total(self) -> float:
        return self.service + self.commit + self.dispatch

    def add(self, other: EnqueueCost) -> None:
        self.invitations += other.invitations
        self.service += other.service
        self.commit += other.commit
        self.dispatch += other.dispatch

    def per_invitation_ms(self, part: str = "total") -> float:
        return 1000 * float(getattr(self, part)) / max(self.invitations, 1)


def invite_batch(app: Flask, admin: Admin, addresses: list[str]) -> EnqueueCost:
    """Invite `addresses` as one request would: service, commit, then hand the outbox ids to Celery."""
    with app.app_context(), tenancy.tenant_context(user_id=admin.user_id, tenant_id=admin.tenant_id):
        membership = teams.membership_of(admin.tenant_id, admin.user_id)
        user = db.session.get(User, admin.user_id)
        assert membership is not None and user is not None
        actor = tenancy.Actor(user=user, membership=membership)  # as the request hook makes it
        started = time.perf_counter()
        results = invitations.invite_many(actor, "\n".join(addresses), TenantRole.MEMBER)
        invited = time.perf_counter()
        db.session.commit()
        committed = time.perf_counter()
        mail.dispatch_queued()
        dispatched = time.perf_counter()
        db.session.remove()
    refused = [r for r in results if r.outcome is not invitations.InviteOutcome.INVITED]
    if refused:
        raise RuntimeError(f"{len(refused)} addresses were not invited, e.g. {refused[0]}")
    return EnqueueCost(len(addresses), invited - started, committed - invited, dispatched - committed)


def invite_all(app: Flask, admin: Admin, addresses: list[str], batch: int) -> EnqueueCost:
    cost = EnqueueCost()
    for start in range(0, len(addresses), batch):
        cost.add(invite_batch(app, admin, addresses[start : start + batch]))
    return cost


def addresses_for(label: str, count: int) -> list[str]:
    return [f"invitee-{label}-{n:04d}@bench.example" for n in range(count)]


# --- Measuring -----------------------------------------------------------------------------------


@dataclass
class Series:
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(r["count"] for r in self.rounds) / sum(r["elapsed"] for r in self.rounds)


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


class CpuMeters:
    """CPU seconds used by each party of the pipeline while the clock runs (from /proc)."""

    def __init__(
        self, worker: CeleryWorker, database: BenchDatabase, redis_client: redis.Redis, smtp: MailSink
    ) -> None:
        admin = create_engine(database.admin_url)
        self._engine = admin
        redis_pid = int(redis_client.info("server")["process_id"])
        self.meters = {
            "worker": CpuMeter(worker.pids),
            "postgres": CpuMeter(partial(backend_pids, admin, database)),
            "redis": CpuMeter(lambda: [redis_pid]),
            # The test SMTP server's share is the harness's, not the product's: measured apart.
            "smtp": CpuMeter(lambda: [smtp.pid]),
            "bench": CpuMeter(lambda: [os.getpid()]),  # polling for the end
        }

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()

    def stop(self) -> dict[str, float]:
        return {f"cpu_{name}": meter.stop() for name, meter in self.meters.items()}

    def close(self) -> None:
        self._engine.dispose()


def backend_pids(engine: Engine, database: BenchDatabase) -> list[int]:
    """The server processes of the app role's connections (the worker's, during a measurement)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE usename = :r AND datname = :d"),
            {"r": database.app_role, "d": database.name},
        )
        return [int(pid) for pid in rows.scalars()]


def run_emails(
    app: Flask,
    admin: Admin,
    worker: CeleryWorker,
    server: MailSink,
    meters: CpuMeters,
    label: str,
    count: int,
    batch: int,
) -> tuple[dict[str, float], EnqueueCost]:
    """Enqueue `count` invitations with the consumer paused, then time their delivery; also the enqueue cost."""
    already = server.received
    worker.pause()
    cost = invite_all(app, admin, addresses_for(label, count), batch)
    meters.start()
    started = time.perf_counter()
    worker.resume()
    server.wait_for_count(already + count, timeout=300)
    elapsed = time.perf_counter() - started
    return {"count": count, "elapsed": elapsed, **meters.stop()}, cost


def run_trivial(
    worker: CeleryWorker, scratch: RedisScratch, meters: CpuMeters, label: str, count: int
) -> dict[str, float]:
    """Publish `count` no-op tasks with the consumer paused, then time until all have run."""
    key = scratch.counter_key(label)
    worker.pause()
    for _ in range(count):
        count_noop.delay(key)
    meters.start()
    started = time.perf_counter()
    worker.resume()
    wait_until(lambda: scratch.count(key) >= count, 300, f"{count} trivial tasks")
    elapsed = time.perf_counter() - started
    return {"count": count, "elapsed": elapsed, **meters.stop()}


def run_rounds(
    app: Flask,
    admin: Admin,
    worker: CeleryWorker,
    server: MailSink,
    scratch: RedisScratch,
    meters: CpuMeters,
    args: argparse.Namespace,
) -> tuple[dict[str, Series], EnqueueCost]:
    series = {part: Series() for part in PARTS}
    enqueue = EnqueueCost()
    # Warm up: every worker process opens its database and SMTP connections, imports, fills caches.
    run_emails(app, admin, worker, server, meters, "warmup", WARMUP_INVITATIONS, args.batch)
    run_trivial(worker, scratch, meters, "warmup", WARMUP_TRIVIAL)
    for number in range(1, args.rounds + 1):
        order = PARTS if number % 2 else PARTS[::-1]
        for part in order:
            if part == "emails":
                sample, cost = run_emails(
                    app, admin, worker, server, meters, f"r{number}", args.invitations, args.batch
                )
                enqueue.add(cost)
            else:
                sample = run_trivial(worker, scratch, meters, f"r{number}", args.trivial)
            series[part].rounds.append(sample)
            count = sample["count"]
            cpu = ", ".join(
                f"{name[4:]} {1000 * value / count:.2f}"
                for name, value in sample.items()
                if name.startswith("cpu_")
            )
            print(
                f"  round {number:2d} {part:<8} {count:5.0f} in {sample['elapsed']:6.3f} s = "
                f"{count / sample['elapsed']:7.1f}/s   CPU ms each: {cpu}",
                flush=True,
            )
    return series, enqueue


def check_deliveries(database: BenchDatabase, server: MailSink, invited: list[str]) -> str:
    """Every outbox row sent once, with its body wiped; every invited address got exactly one message,
    and no Message-ID (one per outbox row) arrived twice."""
    expected = len(invited)
    engine = create_engine(database.admin_url)
    try:
        with engine.connect() as conn:
            rows, unsent, unwiped, retried = conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL), "
                    "count(*) FILTER (WHERE body_ciphertext IS NOT NULL), "
                    "count(*) FILTER (WHERE attempts <> 1) FROM outbox_emails"
                )
            ).one()
    finally:
        engine.dispose()
    arrived = server.report()
    duplicates = arrived.duplicates()
    wrong = (
        rows != expected
        or unsent
        or unwiped
        or len(arrived.message_ids) != expected
        or duplicates
        or sorted(arrived.recipients) != sorted(invited)
    )
    return (
        f"{rows} outbox rows, {unsent} unsent, {unwiped} bodies not wiped, {retried} with attempts != 1; "
        f"{len(arrived.message_ids)} messages at the SMTP server, {duplicates} duplicate Message-IDs, "
        f"recipients {'as invited' if sorted(arrived.recipients) == sorted(invited) else 'NOT as invited'}"
        + (f" (MISMATCH: {expected} expected)" if wrong else "")
    )


# --- Where one message's time goes ---------------------------------------------------------------


@dataclass
class Stopwatch:
    """Wall and CPU (this thread's) seconds of each timed call."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @contextmanager
    def timing(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall.append(time.perf_counter() - wall)
            self.cpu.append(time.thread_time() - cpu)

    def medians_ms(self, skip: int = 0) -> tuple[float, float]:
        return 1000 * statistics.median(self.wall[skip:]), 1000 * statistics.median(self.cpu[skip:])


class TimedTransport:
    """A transport that times each send: the SMTP exchange."""

    def __init__(self, inner: mail.Transport, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch

    def send(self, message: Message) -> None:
        with self.watch.timing():
            self.inner.send(message)


@contextmanager
def timed_render(watch: Stopwatch) -> Iterator[None]:
    """Time mail.render (the message's bytes) for the block (deliver() looks it up at each call)."""
    original = mail.render

    def timed(*args: Any, **kwargs: Any) -> Any:
        with watch.timing():
            return original(*args, **kwargs)

    mail.render = timed
    try:
        yield
    finally:
        mail.render = original


@contextmanager
def in_process_app(environment: dict[str, str], database_url: str) -> Iterator[Flask]:
    app = create_app(load_config({**environment, "DATABASE_URL": database_url}))
    try:
        yield app
    finally:
        with app.app_context():
            transport = app.extensions.get("nyxcore_mail_transport")
            if isinstance(transport, mail.SMTPTransport):
                transport.close_all()
            db.engine.dispose()


def profile_deliver(database: BenchDatabase, environment: dict[str, str], admin: Admin, samples: int) -> None:
    """Count the round trips of one deliver() on the wire, and time its parts, in-process, one at a time."""
    warmup = 5
    stages = {name: Stopwatch() for name in ("whole", "build", "send")}
    counter = WireCounter(database.app_url)
    try:
        with in_process_app(environment, counter.url(database.app_url)) as app:
            invite_all(app, admin, addresses_for("profile", samples + warmup + 1), invitations.MAX_ADDRESSES)
            with app.app_context():
                # Every team's unsent mail is listed only through the sweep's SECURITY DEFINER function.
                ids = mail.unsent_ids(older_than=timedelta(0), limit=samples + warmup + 1)
                db.session.remove()
                ring, sender = keyring.get(), app.config["MAIL_FROM"]
                smtp = mail.SMTPTransport(mail_settings(app.config))
                transport = TimedTransport(smtp, stages["send"])
                try:
                    with mail.delivery_connection() as connection:  # as a batch task holds it
                        counter.take()
                        with tenancy.tenant_context(outbox_id=ids[0]):  # as the task does
                            mail.deliver(connection, ring, smtp, sender, ids[0])
                        wire = counter.take()
                        with timed_render(stages["build"]):
                            for outbox_id in ids[1:]:
                                with stages["whole"].timing(), tenancy.tenant_context(outbox_id=outbox_id):
                                    mail.deliver(connection, ring, transport, sender, outbox_id)
                finally:
                    smtp.close_all()
    finally:
        counter.close()
    print(f"one deliver() (in-process, app role, {len(wire)} query messages on the wire, each a round trip):")
    for number, query in enumerate(wire, 1):
        begin = "BEGIN; " if query.startswith("BEGIN; ") else ""  # the tenancy event's prefix, in the same message
        if query.removeprefix(begin).startswith("SET LOCAL app."):
            statement = re.sub(r"^(SET LOCAL app\.[^;]*;\s*)+", "", query.removeprefix(begin))
            query = begin + "[tenant context (SET LOCAL app.*);] " + statement
        query = re.sub(r"SELECT (?!set_config)(.+?) FROM", "SELECT ... FROM", " ".join(query.split()))
        query = re.sub(r" SET (.+?) (FROM|WHERE) ", r" SET ... \2 ", query)
        print(f"    {number}. {query if len(query) <= 400 else query[:397] + '...'}")
    whole, build, send = (stages[name].medians_ms(warmup) for name in ("whole", "build", "send"))
    rest = (whole[0] - build[0] - send[0], whole[1] - build[1] - send[1])
    print(
        f"deliver() in-process, one message at a time, median of {samples} (wall ms / CPU ms of this thread):"
    )
    for label, (wall, cpu) in (
        ("whole deliver(), on the run's one connection", whole),
        ("render the message", build),
        ("send: the SMTP exchange", send),
        ("the rest: claim, COMMIT, decrypt", rest),
    ):
        print(f"    {label:<48} {wall:6.2f} / {cpu:5.2f}")
    print(
        "    (the SMTP server runs in a process of its own; its CPU is not in these figures)"
    )


# --- Reporting and the whole run -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--invitations", type=int, default=500, help="emails per round")
    parser.add_argument("--batch", type=int, default=50, help="addresses per invite_many call (at most 50)")
    parser.add_argument("--trivial", type=int, default=2000, help="no-op tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", choices=("prefork", "threads", "solo"), default="prefork")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (or threads)")
    parser.add_argument("--prefetch", type=int, default=None, help="worker_prefetch_multiplier override")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database for the bench alone")
    parser.add_argument(
        "--profile-samples", type=int, default=100, help="messages for the in-process profile"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= invitations.MAX_ADDRESSES:
        parser.error(f"--batch must be 1 to {invitations.MAX_ADDRESSES}")
    return args


def software_versions(database: BenchDatabase, scratch: RedisScratch) -> str:
    engine = create_engine(database.admin_url)
    try:
        with engine.connect() as conn:
            postgres = conn.execute(text("SHOW server_version")).scalar_one()
    finally:
        engine.dispose()
    redis_version = scratch.client.info("server")["redis_version"]
    return (
        f"Python {platform.python_version()}, PostgreSQL {postgres}, Redis {redis_version}, "
        f"Celery {celery_version}, aiosmtpd {aiosmtpd_version}"
    )


def cpu_per_item(series: Series) -> dict[str, float]:
    """Median over the rounds of each party's CPU milliseconds per item."""
    names = [name for name in series.rounds[0] if name.startswith("cpu_")]
    return {name[4:]: statistics.median(1000 * r[name] / r["count"] for r in series.rounds) for name in names}


def report(series: dict[str, Series], enqueue: EnqueueCost, args: argparse.Namespace) -> float:
    emails, trivial = series["emails"], series["trivial"]
    ratio = emails.rate / trivial.rate
    pairs = [
        (e["count"] / e["elapsed"]) / (t["count"] / t["elapsed"])
        for e, t in zip(emails.rounds, trivial.rounds, strict=True)
    ]
    print(
        f"over {args.rounds} rounds ({args.pool} pool, concurrency {args.concurrency}, "
        f"prefetch multiplier {args.prefetch or 'as configured'}):"
    )
    print(
        f"  emails delivered     {emails.rate:7.1f} /s  ({args.invitations} per round, queue to SMTP server)"
    )
    print(f"  trivial tasks        {trivial.rate:7.1f} /s  ({args.trivial} per round)")
    print(
        f"ratio emails/trivial: {ratio:.3f}  (per round {min(pairs):.3f} .. {max(pairs):.3f}, "
        f"median {statistics.median(pairs):.3f})"
    )
    cpu = {part: cpu_per_item(values) for part, values in series.items()}
    for part, label in (("emails", "email"), ("trivial", "trivial task")):
        print(
            f"  CPU per {label} (ms, median of rounds): "
            + ", ".join(f"{name} {value:.2f}" for name, value in cpu[part].items())
            + f"; all {sum(cpu[part].values()):.2f}"
        )
    # When the machine is the limit, rates go as the inverse of the CPU each item costs.
    email_all, trivial_all = sum(cpu["emails"].values()), sum(cpu["trivial"].values())
    email_app = email_all - cpu["emails"]["smtp"]
    print(
        f"CPU-based ratio (trivial CPU / email CPU): {trivial_all / email_all:.3f}; without the test SMTP "
        f"server's share (its own process): {(trivial_all - cpu['trivial']['smtp']) / email_app:.3f}"
    )
    print(
        f"enqueue cost per invitation: {enqueue.per_invitation_ms():.2f} ms "
        f"(invite_many {enqueue.per_invitation_ms('service'):.2f} ms, commit "
        f"{enqueue.per_invitation_ms('commit'):.2f} ms, dispatch {enqueue.per_invitation_ms('dispatch'):.2f} ms; "
        f"{enqueue.invitations} invitations in batches of {args.batch})"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("Email pipeline: invitations through the outbox, Celery and SMTP (issue 5)", flush=True)
    queue = f"nyxcore-bench-email-{uuid.uuid4().hex[:8]}"
    scratch = RedisScratch(args.redis_url, queue)
    try:
        if scratch.preexisting:
            print(f"note: {args.redis_url} held {len(scratch.preexisting)} keys before the run; left alone")
        with (
            throwaway_database("nyxcore_bench") as database,
            running_mail_sink() as server,
            tempfile.TemporaryDirectory(prefix="nyxcore-bench-") as log_dir,
        ):
            print(f"machine: {machine_description()}; {software_versions(database, scratch)}")
            print(f"broker: {args.redis_url}, queue {queue} (purged before, deleted after)")
            environment = bench_environment(
                database,
                redis_url=args.redis_url,
                queue=queue,
                smtp=server,
                prefetch=args.prefetch,
            )
            with in_process_app(environment, database.app_url) as app:
                admin = create_admin(app)
                with running_worker(environment, args, Path(log_dir)) as worker:
                    meters = CpuMeters(worker, database, scratch.client, server)
                    try:
                        series, enqueue = run_rounds(app, admin, worker, server, scratch, meters, args)
                    finally:
                        meters.close()
                invited = addresses_for("warmup", WARMUP_INVITATIONS) + [
                    address for n in range(1, args.rounds + 1) for address in addresses_for(f"r{n}", args.invitations)
                ]
                print(f"check: {check_deliveries(database, server, invited)}")
            ratio = report(series, enqueue, args)
            profile_deliver(database, environment, admin, args.profile_samples)
    finally:
        forget_broker_connections()
        scratch.clean()
        scratch.close()
    print(f"{'PASS' if ratio >= TARGET else 'BELOW TARGET'} (target ratio >= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
