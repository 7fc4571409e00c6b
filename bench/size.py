"""Does a page cost the same whatever the size of the team or the number of a user's teams? (issue 15)

    .venv/bin/python bench/size.py [--requests 200] [--large 50000] [--teams-per-user 500]

Creates its own database and roles (bench/_common.py) and seeds, with set-based SQL:
- a small team of 50 members and a large team of `--large` members (the issue asks for 50,000);
- a user who is a member of `--teams-per-user` teams (the issue asks for 500), and a one-team user.
Then builds the app in-process as the app role (testing mode: no rate limits), logs each owner in
through the form, and times `--requests` GETs of each page in turn (wall time, this process alone).
Printed: p50 and p95 per page, each large case's p95 over the same page of the small case, and
the member rows each page shows (small/large: a search may show 5 rows in one and 50 in the other),
with PASS (within 1.5 x) or BELOW TARGET:
- the member list's first, middle and last page of the large team, against the small team's first page
  (pages are read by key: the middle page is the one after the middle member's key, the last `?last=1`);
- a member search in the large team against the same search in the small team, compared like with
  like: a 1-character, a 2-character and a 3-letter term that every member matches ("s", "si",
  "size": a full page of 50 rows in both teams), and terms that one member of each team matches (one
  row in both): a full name ("Size large 24999", whose first ten characters every seeded name
  shares, so the trigram index reads an entry for every user) and a rarer term ("24999"). A page's
  Python cost is mostly its rows, so a term that shows 50 rows in one team and 0 to 5 in the other
  measures rendering, not search; such terms ("7", "e4") are still printed, with their row counts,
  as information, without a verdict;
- the NyxBook list for the user in many teams, against the one-team user's.
`--cases search` runs only the cases whose name contains "search".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from _common import app_config, csrf_token_in, machine_description, throwaway_database
from sqlalchemy import create_engine, text

from nyxcore import create_app, passwords
from nyxcore.extensions import db
from nyxcore.pagination import Key

PASSWORD = "correct horse battery staple"  # noqa: S105 (the seeded users of a throwaway database)
TARGET = 1.5

SEED = (
    # Teams: 'small' (50 members), 'large' (:large members), and :many teams of one owner each that
    # the user 'many' also belongs to; the user 'single' owns one team of its own.
    """
    INSERT INTO users (id, email, name, password_hash)
    SELECT md5('user-' || s || '-' || m)::uuid, s || m || '@size.example', 'Size ' || s || ' ' || m, :password_hash
    FROM (VALUES ('small', 50), ('large', :large)) AS sizes(s, n), generate_series(0, n - 1) AS m
    """,
    """
    INSERT INTO users (id, email, name, password_hash) VALUES
      (md5('user-many')::uuid, 'many@size.example', 'Many Teams', :password_hash),
      (md5('user-single')::uuid, 'single@size.example', 'Single Team', :password_hash)
    """,
    """
    INSERT INTO tenants (id, name, slug, created_by)
    SELECT md5('team-' || s)::uuid, 'Team ' || s, 'team-' || s, md5('user-' || s || '-0')::uuid
    FROM (VALUES ('small'), ('large')) AS sizes(s)
    UNION ALL
    SELECT md5('team-many-' || t)::uuid, 'Many ' || lpad(t::text, 4, '0'), 'many-' || t, md5('user-many')::uuid
    FROM generate_series(0, :many - 1) AS t
    UNION ALL
    SELECT md5('team-single')::uuid, 'Single', 'single', md5('user-single')::uuid
    """,
    """
    INSERT INTO tenant_members (id, tenant_id, user_id, role, joined_at)
    SELECT md5('member-' || s || '-' || m)::uuid, md5('team-' || s)::uuid, md5('user-' || s || '-' || m)::uuid,
           CASE WHEN m = 0 THEN 'owner' ELSE 'member' END, now() - make_interval(secs => n - m)
    FROM (VALUES ('small', 50), ('large', :large)) AS sizes(s, n), generate_series(0, n - 1) AS m
    UNION ALL
    SELECT md5('member-many-' || t)::uuid, md5('team-many-' || t)::uuid, md5('user-many')::uuid, 'owner',
           now() - make_interval(secs => t)
    FROM generate_series(0, :many - 1) AS t
    UNION ALL
    SELECT md5('member-single')::uuid, md5('team-single')::uuid, md5('user-single')::uuid, 'owner', now()
    """,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--large", type=int, default=50_000, help="members of the large team")
    parser.add_argument("--teams-per-user", type=int, default=500, help="teams of the user in many teams")
    parser.add_argument("--cases", default="", help="run only the cases whose name contains this")
    return parser.parse_args(argv)


def seed(admin_url: str, args: argparse.Namespace) -> None:
    params = {
        "password_hash": passwords.hash_password(PASSWORD),
        "large": args.large,
        "many": args.teams_per_user,
    }
    engine = create_engine(admin_url)
    try:
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(text(statement), params)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def middle_key(admin_url: str, large: int) -> Key:
    """The key of the large team's middle member: the middle page is the one after it."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            at, member_id = conn.execute(
                text(
                    "SELECT joined_at, id FROM tenant_members WHERE tenant_id = md5('team-large')::uuid "
                    "ORDER BY joined_at, id OFFSET :n LIMIT 1"
                ),
                {"n": large // 2},
            ).one()
    finally:
        engine.dispose()
    return Key(at, member_id)


def logged_in(app: Any, email: str) -> Any:
    client = app.test_client()
    token = csrf_token_in(client.get("/auth/login").get_data(as_text=True))
    response = client.post("/auth/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
    if response.status_code != 302:
        raise RuntimeError(f"log in as {email} answered {response.status_code}")
    return client


def rows_shown(client: Any, path: str) -> int:
    """How many members the page lists (the rows a page renders are most of its Python cost)."""
    response = client.get(path)
    assert response.status_code == 200, path
    body = response.get_data(as_text=True)
    if 'id="members-heading"' not in body:
        return 0  # not the team page
    members = body.split('id="members-heading"', 1)[1].split("</table>", 1)[0]
    return members.count('<td data-label="Name">')  # a member's row (not the header, not "No member matches")


def timings(client: Any, path: str, requests: int) -> tuple[float, float]:
    """p50 and p95 in ms of `requests` GETs of `path`, after ten unrecorded ones."""
    for _ in range(10):
        assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(path)
        samples.append(1000 * (time.perf_counter() - started))
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


def judged(name: str, ratio: float, shown: tuple[int, int]) -> str:
    """PASS or BELOW TARGET; a case whose two pages show different numbers of rows gets none."""
    if shown[0] != shown[1]:
        return f"INFO: {name} at {ratio:.2f} x ({shown[0]} rows against {shown[1]}: not like with like)"
    return f"{'PASS' if ratio <= TARGET else 'BELOW TARGET'}: {name} at {ratio:.2f} x (target <= {TARGET})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"machine: {machine_description()}")
    with throwaway_database("nyxcore_size") as database:
        seed(database.admin_url, args)
        middle = middle_key(database.admin_url, args.large)
        print(
            f"data: teams of 50 and {args.large} members; a user in {args.teams_per_user} teams and one in 1"
        )
        app = create_app(app_config(database, database.app_url))
        try:
            small, large = logged_in(app, "small0@size.example"), logged_in(app, "large0@size.example")
            many, single = logged_in(app, "many@size.example"), logged_in(app, "single@size.example")
            cases = [
                ("member list, first page", (small, "/team/"), (large, "/team/")),
                ("member list, middle page", (small, "/team/"), (large, f"/team/?after={middle}")),
                ("member list, last page", (small, "/team/?last=1"), (large, "/team/?last=1")),
                ("search, 1 character, full page", (small, "/team/?q=s"), (large, "/team/?q=s")),
                ("search, 2 characters, full page", (small, "/team/?q=si"), (large, "/team/?q=si")),
                ("search, 3 letters, full page", (small, "/team/?q=size"), (large, "/team/?q=size")),
                ("search, a full name, one row", (small, "/team/?q=size+small+7"), (large, "/team/?q=size+large+24999")),
                ("search, a rare term, one row", (small, "/team/?q=small+7"), (large, "/team/?q=24999")),
                ("search, 1 character (info)", (small, "/team/?q=7"), (large, "/team/?q=7")),
                ("search, 2 characters (info)", (small, "/team/?q=e4"), (large, "/team/?q=e4")),
                (f"NyxBook, user in {args.teams_per_user} teams", (single, "/notes/"), (many, "/notes/")),
            ]
            print(f"\n{'case':<32} {'small p50/p95 ms':>18} {'large p50/p95 ms':>18} {'p95 ratio':>9} {'rows':>7}")
            verdicts = []
            for name, (small_client, small_path), (large_client, large_path) in cases:
                if args.cases not in name:
                    continue
                small_p50, small_p95 = timings(small_client, small_path, args.requests)
                large_p50, large_p95 = timings(large_client, large_path, args.requests)
                ratio = large_p95 / small_p95
                shown = rows_shown(small_client, small_path), rows_shown(large_client, large_path)
                print(
                    f"{name:<32} {small_p50:8.2f} / {small_p95:7.2f} {large_p50:8.2f} / {large_p95:7.2f} {ratio:9.2f}"
                    f" {shown[0]:3d}/{shown[1]:<3d}"
                )
                verdicts.append(judged(name, ratio, shown))
            print()
            for verdict in verdicts:
                print(verdict)
        finally:
            with app.app_context():
                db.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
