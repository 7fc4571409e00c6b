"""Stop `make test` at once, with instructions, when PostgreSQL or Redis is not reachable, or a
program the tests start (PgBouncer) is not installed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psycopg2
import redis

PG_URL = os.environ.get("NYXCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NYXCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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
    if not (shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists()):
        problems.append(
            "PgBouncer is not installed (tests/deployment/test_pgbouncer.py starts one).\n"
            "  Install it:  apt-get install -y pgbouncer   (.ci/run does)"
        )
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
