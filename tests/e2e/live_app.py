"""NyxCore as it runs in production, for browser tests: gunicorn and a Celery worker as processes.

    with running_mail_server() as mail, running_dns_server() as dns, running_live_app(database, mail, dns, log_dir=...) as live:
        ...  # a browser talks to live.url; invitation mail reaches `mail` through the worker

Both processes get the same environment, the way an operator's `.env` reaches `web` and `worker`:
testing mode (plain-http cookies, no rate limits), the app role on the test database, the test
Redis as broker with a queue of this run's own (CELERY_TASK_DEFAULT_QUEUE, so concurrent runs on
one Redis never take each other's tasks), SMTP to the given server, and DNS (for verified domains)
to the given DNS server. PUBLIC_URL is the server's
own address, so the links in the emails open in the browser as they are. Both processes run
under tests/live.py's harness, which stops their process groups when the block ends; the queue is
then deleted.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import kombu
import redis

from nyxcore.crypto import generate_key_setting
from tests.conftest import REDIS_URL, TestDatabase
from tests.helpers import HOST, free_port
from tests.integration.dnsserver import RunningDns
from tests.integration.mailserver import MailServer
from tests.live import CELERY, GUNICORN, ROOT, LiveServers, Running, healthy

# Alone on its queue, the worker has no one to gossip or mingle with: leaving that out saves seconds.
CELERY_WORKER = [
    *CELERY,
    *("worker", "--pool", "solo", "--loglevel", "INFO"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
]


@dataclass
class LiveApp:
    url: str  # http://127.0.0.1:<port>, also the app's PUBLIC_URL
    mail: MailServer
    web: Running
    worker: Running
    queue: str
    dns: RunningDns | None = None  # the DNS server the app asks, where a test started one

    @property
    def invite_prefix(self) -> str:
        return f"{self.url}/invite/"

    def check_alive(self) -> None:
        self.web.check_alive()
        self.worker.check_alive()

    def mail_to(
        self, address: str, timeout: float = 20.0, *, link_prefix: str | None = None, after: int = 0
    ) -> EmailMessage:
        """The first message the SMTP server received for `address` (with a link under `link_prefix`,
        if given) after its first `after` messages, waiting up to `timeout` s. The server lives as
        long as the e2e package: pass `after` to skip what earlier tests were sent."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.mail.messages[after:]:
                if message["To"] == address and (link_prefix is None or MailServer.links(message, link_prefix)):
                    return message
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no email to {address} within {timeout:g} s; received for "
                    f"{[str(m['To']) for m in self.mail.messages]}.\nworker log:\n{self.worker.log_tail()}"
                )
            time.sleep(0.05)

    def link_to(self, address: str, path_prefix: str, *, after: int = 0) -> str:
        """The one link under `path_prefix` (such as /auth/verify/) in the first email to `address` with
        one, after the server's first `after` messages."""
        prefix = f"{self.url}{path_prefix}"
        links = MailServer.links(self.mail_to(address, link_prefix=prefix, after=after), prefix)
        assert len(links) == 1, links
        return links[0]

    def magic_link(self, address: str) -> str:
        """The one invitation link in the email sent to `address`."""
        return self.link_to(address, "/invite/")


def environment(database: TestDatabase, mail: MailServer, dns: RunningDns, *, port: int, queue: str) -> dict[str, str]:
    """What gunicorn and the worker are given: a clean environment, not the caller's."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(ROOT)),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "NYXCORE_ENV": "testing",
        "SECRET_KEY": "e2e-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "NYXCORE_ENCRYPTION_KEYS": generate_key_setting("e2e"),
        # Testing mode already sends cookies over plain http; say so, as an operator would.
        "SESSION_COOKIE_SECURE": "false",
        "DATABASE_URL": database.app_url,
        "MIGRATION_DATABASE_URL": database.owner_url,
        "NYXCORE_APP_ROLE": database.app_role,
        "REDIS_URL": REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": mail.host,
        "SMTP_PORT": str(mail.port),
        "MAIL_FROM": "NyxCore <no-reply@nyxcore.test>",
        "DNS_RESOLVER": dns.address,
        "PUBLIC_URL": f"http://{HOST}:{port}",
        "RATELIMIT_ENABLED": "false",
    }


def delete_queue(queue: str) -> None:
    """Remove this run's queue, whatever a test left in it, and kombu's binding keys for it."""
    with kombu.Connection(REDIS_URL, transport_options={"socket_connect_timeout": 2}) as conn:
        kombu.Queue(queue).bind(conn.default_channel).delete()
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        # The name is unique to this run, so every key that holds it is this run's.
        leftovers = list(client.scan_iter(match=f"*{queue}*"))
        if leftovers:
            client.delete(*leftovers)
    finally:
        client.close()


@contextmanager
def running_live_app(
    database: TestDatabase, mail: MailServer, dns: RunningDns, *, log_dir: Path
) -> Iterator[LiveApp]:
    """gunicorn (2 workers of 4 threads) and a Celery worker on the test database, stopped when the block ends."""
    port = free_port()
    queue = f"nyxcore-e2e-{uuid.uuid4().hex[:12]}"
    env = environment(database, mail, dns, port=port, queue=queue)
    url = f"http://{HOST}:{port}"
    try:
        with LiveServers(log_dir) as servers:
            # gunicorn also reads ./gunicorn.conf.py when there is one (access log, redacting logger,
            # start-up checks), as in production; the command line wins for what it names. The threads
            # stay at production's 4: gunicorn's gthread worker gives a new connection a thread and
            # waits up to 5 s for its first bytes, and Chromium opens speculative connections it may
            # never use, so with one thread a worker sat out 5 s and a click timed out (CI, 2026-12-02).
            web_command = [*GUNICORN, "--bind", f"{HOST}:{port}", "--workers", "2", "--threads", "4"]
            web = servers.spawn("gunicorn", web_command, env=env)
            worker = servers.spawn("celery-worker", [*CELERY_WORKER, "--hostname", f"{queue}@%h"], env=env)
            servers.wait_until(healthy(url), "gunicorn answers /api/v1/health", watch=[web, worker])
            # Celery logs "<name>@<host> ready." once it consumes from its queue.
            servers.wait_until(lambda: " ready." in worker.log(), "the Celery worker", watch=[web, worker])
            yield LiveApp(url=url, mail=mail, dns=dns, web=web, worker=worker, queue=queue)
    finally:
        delete_queue(queue)
