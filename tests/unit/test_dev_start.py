"""`make run` style: the app migrates (twice, as two starts do) and starts on SQLite with no
PostgreSQL or Redis, and serves pages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_development_server_serves_login_on_sqlite(tmp_path):
    env = {
        "NYXCORE_ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    # `make run` upgrades on every start: the second time is a no-op on the same file.
    for _ in range(2):
        upgrade = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/login", timeout=2) as response:
                    body = response.read().decode()
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        assert "<h1>Log in</h1>" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as response:
            assert b'"database":"ok"' in response.read().replace(b" ", b"")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()
