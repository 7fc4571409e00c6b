"""Where a page's CPU goes, and its round trips to PostgreSQL, in one process (issue 15).

    .venv/bin/python bench/profile_page.py [--path /team/] [--requests 300] [--members 50] [--teams 50]

Creates its own database and roles (bench/_common.py), seeds it as bench/load.py does, builds the
app in-process as the app role through a relay that counts the query messages on the wire (one
message, one round trip: psycopg2 waits for each answer), logs in as the owner of team 0 through the
form, and then:
- prints the query messages of one GET of the page (the pre-ping, BEGIN, statements, COMMIT);
- profiles `--requests` GETs under cProfile (this thread's CPU time, not wall time) and prints the CPU per
  request and how it splits by package (own time of the functions in each: SQLAlchemy, psycopg2,
  Jinja and the compiled templates, Werkzeug, Flask and its extensions, NyxCore); the garbage
  collector's share is printed from gc's own callbacks (wall time of its collections).
The app runs in testing mode (no rate limits), so the figures are the page's, not the limiter's.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections import defaultdict
from typing import Any

from _common import WireCounter, app_config, csrf_token_in, machine_description, throwaway_database
from load import OWNER_EMAIL, PASSWORD, seed

from nyxcore import create_app
from nyxcore.extensions import db

PACKAGES = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg2", "psycopg2"),
    ("jinja2 + templates", "/jinja2/"),
    ("jinja2 + templates", "<template>"),
    ("jinja2 + templates", ".html"),
    ("markupsafe", "markupsafe"),
    ("werkzeug", "/werkzeug/"),
    ("flask + extensions", "/flask"),
    ("wtforms", "/wtforms/"),
    ("nyxcore", "/nyxcore/"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--path", action="append", help="page to profile (repeatable; default /team/)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=0, help="also print the N functions of most cumulative CPU")
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--notes", type=int, default=60)
    parser.add_argument("--invitations", type=int, default=5)
    args = parser.parse_args(argv)
    args.path = args.path or ["/team/"]
    return args


def package_of(filename: str, function: str) -> str:
    for name, marker in PACKAGES:
        if marker in filename or (marker == "psycopg2" and "psycopg2" in function):
            return name
    if filename == "~":
        return "builtins (C)" if "psycopg2" not in function else "psycopg2"
    return "other Python"


def breakdown(profile: cProfile.Profile, requests: int) -> list[tuple[str, float]]:
    """Own time per package, in ms per request, largest first."""
    stats = pstats.Stats(profile)
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package_of(filename, function)] += own
    return sorted(((k, 1000 * v / requests) for k, v in by_package.items()), key=lambda kv: -kv[1])


def log_in(client: Any) -> None:
    token = csrf_token_in(client.get("/auth/login").get_data(as_text=True))
    response = client.post(
        "/auth/login", data={"csrf_token": token, "email": OWNER_EMAIL, "password": PASSWORD}
    )
    if response.status_code != 302:
        raise RuntimeError(f"log in answered {response.status_code}")


def profile_path(client: Any, counter: WireCounter, path: str, requests: int, top: int = 0) -> None:
    for _ in range(20):  # warm: templates compiled, statements cached, pool open
        assert client.get(path).status_code == 200
    counter.take()
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    wire = counter.take()
    print(f"\n{path}: {len(wire)} query messages (round trips) for one GET:")
    for query in wire:
        print(f"  {query[:150]}{'...' if len(query) > 150 else ''}")
    collections: list[float] = []
    started_gc = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal started_gc
        if phase == "start":
            started_gc = time.perf_counter()
        else:
            collections.append(time.perf_counter() - started_gc)

    gc.callbacks.append(on_gc)
    profile = cProfile.Profile(time.thread_time)  # this thread's CPU: not the relay's, not waiting
    cpu = time.thread_time()
    profile.enable()
    for _ in range(requests):
        client.get(path)
    profile.disable()
    cpu = time.thread_time() - cpu
    gc.callbacks.remove(on_gc)
    print(f"{path}: {1000 * cpu / requests:.2f} ms CPU per request under cProfile ({requests} requests)")
    print(
        f"  garbage collector: {len(collections)} collections, {1000 * sum(collections) / requests:.2f} ms per request"
    )
    for package, ms in breakdown(profile, requests):
        print(f"  {package:<20} {ms:6.2f} ms")
    if top:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(top)
    started = time.thread_time()
    for _ in range(requests):
        client.get(path)
    print(
        f"{path}: {1000 * (time.thread_time() - started) / requests:.2f} ms CPU per request without the profiler"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"machine: {machine_description()}")
    with throwaway_database("nyxcore_profile") as database:
        seed(database, args, "0" * 64)
        counter = WireCounter(database.app_url)
        app = create_app(app_config(database, counter.url(database.app_url)))
        try:
            client = app.test_client()
            log_in(client)
            print(f"data: {args.teams} teams x {args.members} members; as the owner of team 0")
            for path in args.path:
                profile_path(client, counter, path, args.requests, args.top)
        finally:
            with app.app_context():
                db.engine.dispose()
            counter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
