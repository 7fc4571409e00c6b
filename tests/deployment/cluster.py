"""NyxCore as an operator scales it: several gunicorn servers, Celery workers and one beat, as
processes on one PostgreSQL database and one Redis, in production mode.

    with running_mail_server() as mail, running_cluster(environment, log_dir, web=2, workers=2) as cluster:
        Browser(cluster.urls[0]) ...  # and cluster.urls[1]: the same app, another process

`cluster_environment` is what every process gets (the same SECRET_KEY, encryption keys, database
URL, Redis, SMTP server and a queue and rate-limit prefix of this cluster's own); the servers are
gunicorn from gunicorn.conf.py, on plain HTTP on the loopback, each on a port of its own. The block's
end stops every process (tests/live.py) and deletes the queue and the cluster's Redis keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PASSWORD, TestDatabase, csrf_from
from tests.e2e.live_app import delete_queue
from tests.helpers import HOST, free_port
from tests.integration.mailserver import MailServer
from tests.live import BIN, CELERY, Browser, LiveServers, Process, Reply, healthy, production_environment

GUNICORN_PRODUCTION = [str(BIN / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"]
# docker-compose.yml's worker command, on this cluster's queue; alone on it, workers need no gossip.
CELERY_WORKER = [
    *CELERY,
    *("worker", "--loglevel", "INFO", "--concurrency", "2"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
]


@dataclass
class Cluster:
    servers: LiveServers
    urls: list[str]  # http://127.0.0.1:<port> of each gunicorn
    web: list[Process]
    workers: list[Process]
    beat: Process | None
    queue: str

    def processes(self) -> list[Process]:
        return [*self.web, *self.workers, *([self.beat] if self.beat else [])]

    def wait_until(self, condition: Callable[[], bool], what: str, *, timeout: float = 60.0) -> None:
        """Poll `condition`; fail at `timeout`, or at once with its log if a process of the cluster exits."""
        self.servers.wait_until(condition, what, watch=self.processes(), timeout=timeout)


def cluster_environment(
    database: TestDatabase, mail: MailServer, *, database_url: str = "", **overrides: str
) -> dict[str, str]:
    """Production settings shared by every process of a cluster (on the app role unless `database_url`)."""
    queue = f"nyxcore-cluster-{uuid.uuid4().hex[:12]}"
    return production_environment(
        database_url or database.app_url,
        NYXCORE_APP_ROLE=database.app_role,
        LANG="C.UTF-8",
        PYTHONUNBUFFERED="1",
        # Plain HTTP on the loopback (no nginx here): the session cookie must travel without TLS.
        SESSION_COOKIE_SECURE="false",
        PUBLIC_URL="http://nyxcore.test",
        MAIL_BACKEND="smtp",
        SMTP_HOST=mail.host,
        SMTP_PORT=str(mail.port),
        MAIL_FROM="NyxCore <no-reply@nyxcore.test>",
        CELERY_TASK_DEFAULT_QUEUE=queue,
        # The queue's name is unique: delete_queue also removes the rate-limit and quota counters.
        RATELIMIT_KEY_PREFIX=queue,
        **overrides,
    )


@contextmanager
def running_cluster(
    environment: dict[str, str], log_dir: Path, *, web: int = 2, workers: int = 2, beat: bool = True
) -> Iterator[Cluster]:
    """`web` gunicorn servers, `workers` Celery workers and a beat, all with `environment`."""
    queue = environment["CELERY_TASK_DEFAULT_QUEUE"]
    ports = [free_port() for _ in range(web)]
    try:
        with LiveServers(log_dir) as servers:
            web_processes = [
                servers.spawn(
                    f"gunicorn-{n}",
                    GUNICORN_PRODUCTION,
                    env={**environment, "GUNICORN_BIND": f"{HOST}:{port}"},
                )
                for n, port in enumerate(ports, 1)
            ]
            worker_processes = [
                servers.spawn(
                    f"worker-{n}", [*CELERY_WORKER, "--hostname", f"w{n}-{queue}@%h"], env=environment
                )
                for n in range(1, workers + 1)
            ]
            beat_process = None
            if beat:
                schedule = str(log_dir / "celerybeat-schedule")
                beat_process = servers.spawn(
                    "beat", [*CELERY, "beat", "--loglevel", "INFO", "--schedule", schedule], env=environment
                )
            cluster = Cluster(
                servers,
                [f"http://{HOST}:{port}" for port in ports],
                web_processes,
                worker_processes,
                beat_process,
                queue,
            )
            for url in cluster.urls:
                cluster.wait_until(healthy(url), f"gunicorn at {url}")
            for worker in worker_processes:
                # Celery logs "<name>@<host> ready." once it consumes from its queue.
                cluster.wait_until(lambda w=worker: " ready." in w.log(), worker.name)  # type: ignore[misc]
            yield cluster
    finally:
        delete_queue(queue)


def log_in(browser: Browser, email: str, password: str = PASSWORD) -> None:
    """Log in through the form, as a person would (the server checks the Argon2id hash)."""
    page = browser.get("/auth/login")
    assert page.status == 200, page.status
    reply = browser.post(
        "/auth/login", {"csrf_token": csrf_from(page.body), "email": email, "password": password}
    )
    assert reply.status in (302, 303), (reply.status, reply.body[-2000:])


def post_from(browser: Browser, page_path: str, action: str, form: dict[str, str]) -> Reply:
    """Post `form` to `action` with the CSRF token of the page at `page_path`, as its form would."""
    page = browser.get(page_path)
    assert page.status == 200, (page_path, page.status)
    return browser.post(action, {"csrf_token": csrf_from(page.body), **form})
