"""Stop `make test` at once, with instructions, when PostgreSQL or Redis is not reachable, or a
program the tests start (Chromium, nginx, PgBouncer, initdb, redis-server, the Docker engine) is not
installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import redis

PG_URL = os.environ.get("NYXCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NYXCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# debootstrap is in /usr/sbin, which a user's PATH may leave out.
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def docker_problems() -> list[str]:
    """The image test (tests/deployment/test_image.py) builds and runs the Dockerfile."""
    tools = {"docker": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
    absent = [package for tool, package in tools.items() if not shutil.which(tool, path=PATH)]
    if absent:
        return [f"missing for the image test: apt-get install {' '.join(absent)} (or run .ci/run)."]
    try:
        answer = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        answer = None
    if answer is None or answer.returncode != 0:
        return [
            "the Docker engine does not answer `docker info`.\n"
            "  Start it:  nohup dockerd >/var/log/dockerd.log 2>&1 &   (as .ci/run does)"
        ]
    return []


# Programs the tests start, by the Debian package that has them, and which tests need them.
PROGRAMS = {
    "chromium": ("chromium", "the browser tests (tests/e2e)"),
    "nginx": ("nginx-light", "the deployment tests (nginx in front of gunicorn)"),
    "pgbouncer": ("pgbouncer", "tests/deployment/test_pgbouncer.py"),
    "redis-server": ("redis-server", "the fault tests (a Redis of their own)"),
}
PG_BIN = Path(os.environ.get("NYXCORE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def program_problems() -> list[str]:
    problems = [
        f"{program} is not installed ({used_by}).\n  Install it:  apt-get install -y {package}   (.ci/run does)"
        for program, (package, used_by) in PROGRAMS.items()
        if not shutil.which(program, path=PATH)
    ]
    if not (PG_BIN / "initdb").exists():
        problems.append(
            f"{PG_BIN}/initdb is missing (the fault tests start a PostgreSQL cluster of their own).\n"
            "  Install postgresql-15, or set NYXCORE_PG_BIN to the folder of initdb and pg_ctl."
        )
    return problems


def main() -> int:
    problems = []
    try:
        psycopg2.connect(PG_URL, connect_timeout=3).close()
    except psycopg2.Error as exc:
        problems.append(
            f"PostgreSQL is not reachable at {PG_URL} ({str(exc).strip()}).\n"
            "  Start it:  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "  or point NYXCORE_TEST_DATABASE_URL at a server where you may create databases and roles."
        )
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        problems.append(
            f"Redis is not reachable at {REDIS_URL} ({exc}).\n"
            '  Start it:  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no\n'
            "  or point NYXCORE_TEST_REDIS_URL at one."
        )
    problems += program_problems()
    problems += docker_problems()
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
