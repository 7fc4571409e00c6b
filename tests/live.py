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
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from nyxcore.crypto import generate_key_setting
from tests.conftest import REDIS_URL
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
    "LiveServerError",
    "LiveServers",
    "Process",
    "free_port",
    "production_environment",
]


class LiveServerError(AssertionError):
    """A process could not start, died, or did not become ready; the message carries its log."""


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
        """Poll `condition` until it holds; fail early if a watched process exits, and at `timeout`.

        OSError from the condition (a port not listening yet) counts as "not yet".
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
