"""`make run` style: the app migrates (twice, as two starts do) and starts on SQLite with no
PostgreSQL or Redis, and serves pages."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from tests.helpers import free_port
from tests.live import ROOT, LiveServers, http_status

FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]


def test_development_server_serves_login_on_sqlite(tmp_path):
    env = {
        "NYXCORE_ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    # `make run` upgrades on every start: the second time is a no-op on the same file.
    for _ in range(2):
        upgrade = subprocess.run(
            [*FLASK, "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with LiveServers(tmp_path / "logs") as servers:
        server = servers.spawn("flask-run", [*FLASK, "run", "--port", str(port)], env=env)
        servers.wait_until(
            lambda: http_status(f"{url}/auth/login") == 200, "flask run serves /auth/login", watch=[server]
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/login", timeout=5) as response:
            assert "<h1>Log in</h1>" in response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as response:
            assert b'"database":"ok"' in response.read().replace(b" ", b"")


def test_make_run_takes_port_and_derives_public_url_from_it():
    """`make run PORT=...` serves on that port and mails links to it, unless PUBLIC_URL is set."""

    def run_command(*args: str, **env: str) -> str:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        dry = subprocess.run(["make", "-n", "run", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        return next(line for line in dry.stdout.splitlines() if " run --host" in line)

    assert "PUBLIC_URL='http://127.0.0.1:5000'" in run_command() and "--port '5000'" in run_command()
    chosen = run_command("PORT=5123")
    assert "PUBLIC_URL='http://127.0.0.1:5123'" in chosen and "--port '5123'" in chosen
    own = run_command("PORT=5123", PUBLIC_URL="https://dev.example")
    assert "PUBLIC_URL='https://dev.example'" in own and "--port '5123'" in own
