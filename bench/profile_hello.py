"""Every request's fixed cost in one process (issue 15): `/bench/hello` through the whole app against
the bare Flask hello (bench/bare_app.py), in CPU time per request, without gunicorn or the network.

    .venv/bin/python bench/profile_hello.py [--requests 5000] [--rounds 3] [--top 40]

The app is bench/reference_app.py's (wsgi.py's app plus the bench routes), built in production mode
as bench/load.py runs it (its environment: Redis rate limits, the app role on a throwaway database),
after `gc.freeze()` as wsgi.py does. Each round calls both WSGI apps `--requests` times with the same
environ (a GET without cookies, as wrk sends) and prints this thread's CPU per request; `--top N`
then prints the N functions of most cumulative time under cProfile for the app.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import time
from typing import Any

from _common import machine_description, throwaway_database
from load import production_environment
from werkzeug.test import EnvironBuilder


def cpu_per_request(app: Any, requests: int) -> float:
    """ms of this thread's CPU per GET /bench/hello through `app` (after 200 unmeasured ones)."""
    environ = EnvironBuilder(path="/bench/hello", headers={"User-Agent": "wrk"}).get_environ()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    def one() -> None:
        body = app(dict(environ), start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    for _ in range(200):
        one()
    started = time.thread_time()
    for _ in range(requests):
        one()
    return 1000 * (time.thread_time() - started) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"machine: {machine_description()}")
    with throwaway_database("nyxcore_hello") as database:
        os.environ.update(production_environment(database, "hello"))
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from bench import bare_app, reference_app

        gc.freeze()
        apps, bares = [], []
        for _ in range(args.rounds):
            app, bare = cpu_per_request(reference_app.app, args.requests), cpu_per_request(bare_app.app, args.requests)
            apps.append(app)
            bares.append(bare)
            print(f"/bench/hello {app:.3f} ms CPU per request, bare Flask {bare:.3f} ms ({app / bare:.2f} x)")
        # On a shared machine other processes only ever add time: the fastest round is the steadiest figure.
        print(f"fastest round of each: /bench/hello {min(apps):.3f} ms, bare Flask {min(bares):.3f} ms "
              f"({min(apps) / min(bares):.2f} x)")
        if args.top:
            profile = cProfile.Profile(time.thread_time)
            profile.runcall(cpu_per_request, reference_app.app, args.requests)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
        from nyxcore.extensions import db

        with reference_app.app.app_context():
            db.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
