"""Real servers for tests: processes started on free loopback ports, waited for, logged and stopped.

One harness for everything that runs NyxCore the way an operator does (gunicorn, a Celery worker and
beat, nginx in front): the browser tests' live app, the deployment test's stack and the README install.

    with LiveServers(log_dir) as servers:
        web = servers.spawn("gunicorn", [*GUNICORN, "--bind", f"{HOST}:{port}"], env=environment)
        servers.wait_until(lambda: http_status(f"http://{HOST}:{port}/api/v1/health") == 200,
                           "gunicorn answers /api/v1/health", watch=[web])
        ...

Each process gets a process group of its own (so a shell's background jobs and gunicorn's workers
stop with it), its output goes to `<log_dir>/<name>.log`, and the block's end stops every group the
harness started (SIGTERM, then SIGKILL after a while) by its own id, never by name.

`production_environment` is the complete environment such a process gets in production mode, and
`Browser` a small HTTP(S) client with cookies that talks to what the harness started.
"""

from __future__ import annotations

import contextlib
import email.message
import http.client
import http.cookiejar
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from nyxcore.crypto import generate_key_setting
from tests.conftest import REDIS_URL, csrf_from
from tests.helpers import HOST, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GUNICORN = [sys.executable, "-m", "gunicorn", "wsgi:app"]
CELERY = [sys.executable, "-m", "celery", "-A", "worker"]
START_TIMEOUT = 40.0
STOP_TIMEOUT = 15.0

__all__ = [
    "BIN",
    "CELERY",
    "GUNICORN",
    "HOST",
    "ROOT",
    "Browser",
    "LiveServerError",
    "LiveServers",
    "Process",
    "Reply",
    "Running",
    "failed_logins",
    "free_port",
    "plain_status",
    "production_environment",
]


class LiveServerError(AssertionError):
    """A process could not start, died, or did not become ready; the message carries its log."""


class Running(Protocol):
    """What a test watches while it waits: a Process here, or a container (tests/deployment/image.py)."""

    def check_alive(self) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...


@dataclass
class Process:
    """One started process (the leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def group(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise LiveServerError, with the log's tail, if the process has exited."""
        if self.popen.poll() is not None:
            raise LiveServerError(f"{self.name} exited with status {self.popen.returncode}:\n{self.log_tail()}")


class Watched(Protocol):
    """What `wait_until` watches: a Process here, a docker Container (tests/deployment/image.py)."""

    name: str

    def check_alive(self) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    watch: Iterable[Watched] = (),
    timeout: float = START_TIMEOUT,
    log: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` until it holds; fail early if a watched process exits, and at `timeout`.

    OSError from the condition (a port not listening yet) counts as "not yet". The error shows
    `log()`, or the tail of each watched process's log.
    """
    watched = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        for process in watched:
            process.check_alive()
        with contextlib.suppress(OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            shown = log() if log else "\n\n".join(f"{p.name}:\n{p.log_tail()}" for p in watched)
            raise LiveServerError(f"{what}: not ready after {timeout:g} s\n{shown[-4000:]}")
        time.sleep(0.05)


def stop_process_group(
    group: int, timeout: float = STOP_TIMEOUT, *, leader: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM to every process of `group` (one a test started), SIGKILL to what is left after `timeout`.

    Give the group's `leader` if it is our child: until it is reaped, its zombie keeps the group alive.
    """
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


@dataclass
class LiveServers:
    """The processes a test (or fixture) started, to wait for and to stop together."""

    log_dir: Path
    cwd: Path = ROOT
    started: list[Process] = field(default_factory=list)

    def __enter__(self) -> LiveServers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def spawn(
        self, name: str, command: list[str], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> Process:
        """Start `command` with exactly `env` (nothing inherited) in a process group of its own."""
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log_path)
        self.started.append(process)
        return process

    def wait_until(
        self,
        condition: Callable[[], bool],
        what: str,
        *,
        watch: Iterable[Process] = (),
        timeout: float = START_TIMEOUT,
        log: Callable[[], str] | None = None,
    ) -> None:
        """Poll `condition` until it holds; fail early if a watched process exits, and at `timeout`."""
        wait_until(condition, what, watch=watch, timeout=timeout, log=log)

    def stop(self) -> None:
        """Stop every process group started here, the last started first."""
        while self.started:
            process = self.started.pop()
            stop_process_group(process.group, leader=process.popen)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=5)


def http_status(url: str, *, timeout: float = 2.0, tls: bool = False) -> int:
    """The status of a GET of `url` (http://host:port/path on loopback); OSError if nothing answers."""
    scheme, rest = url.split("://", 1)
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    conn: http.client.HTTPConnection
    if scheme == "https" or tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the tests' own self-signed certificate
        conn = http.client.HTTPSConnection(host, int(port or 443), timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def healthy(base_url: str) -> Callable[[], bool]:
    """A condition for `wait_until`: the server at `base_url` answers /api/v1/health with 200."""
    return lambda: http_status(f"{base_url}/api/v1/health") == 200


def production_environment(database_url: str, **overrides: str) -> dict[str, str]:
    """A complete, valid production environment for gunicorn or `flask`, and nothing inherited."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NYXCORE_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "NYXCORE_ENCRYPTION_KEYS": generate_key_setting("k1"),
        "MAIL_BACKEND": "console",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        **overrides,
    }


@dataclass
class Reply:
    status: int
    headers: email.message.Message
    body: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """Talks to a server as a browser would: cookies, no auto-redirects, and over TLS (nginx with the
    tests' self-signed certificate) without verifying it. Plain http:// bases work as well.

    Give each concurrent client a Browser of its own; Browsers that share `cookies` are one person's
    tabs (on another server, say).
    """

    def __init__(
        self, base: str, *, timeout: float = 15.0, cookies: http.cookiejar.CookieJar | None = None
    ) -> None:
        self.base = base
        self.timeout = timeout
        self.cookies = cookies if cookies is not None else http.cookiejar.CookieJar()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(self.cookies),
            _NoRedirects(),
        )

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        # The base is always the test's own https://127.0.0.1:<port>.
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})  # noqa: S310
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return Reply(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, error.headers, error.read().decode())

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", path, form=form, headers=headers)

    def post_from_page(self, path: str, form: dict[str, str], **headers: str) -> Reply:
        """Post a form from the page at `path`, with the Referer a browser sends (same origin)."""
        return self.post(path, form, headers={"Referer": self.base + path, **headers})


def plain_status(port: int, path: str, *, tls: bool = False) -> int:
    return http_status(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}", timeout=5)


def failed_logins(ports: Sequence[int], *, source: str, attempts: int) -> list[int]:
    """The statuses of `attempts` failed logins sent straight to gunicorn from the address `source`.

    The attempts go to each of `ports` in turn (one server, or several instances sharing the
    rate-limit storage), each with the session of the first one's log-in page and another claimed
    X-Forwarded-For, which only a trusted proxy may set.
    """

    def exchange(port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection(HOST, port, timeout=10, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read().decode()
        finally:
            conn.close()

    page, html = exchange(ports[0], "GET", "/auth/login")
    # The session cookie is Secure; a client that talks plain HTTP to gunicorn can still send it.
    cookie = page.getheader("Set-Cookie").split(";", 1)[0]
    form = urllib.parse.urlencode(
        {"csrf_token": csrf_from(html), "email": "nobody@example.com", "password": "not the password"}
    )
    statuses = []
    for attempt in range(attempts):
        response, _ = exchange(
            ports[attempt % len(ports)],
            "POST",
            "/auth/login",
            form,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": cookie,
                "X-Forwarded-For": f"198.51.100.{attempt}",
                "X-Forwarded-Proto": "https",
            },
        )
        statuses.append(response.status)
    return statuses
