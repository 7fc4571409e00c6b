"""The team page reads a large team's members by its index, whatever plan PostgreSQL keeps (issue 15).

Two statements of the team page read a 50,000-member team's index far past what they show, under plans a
connection keeps:

- **The seat count.** `nyxcore_seat_counts` (0021) counts a team's live members up to a cap (COUNT_CAP + 1,
  "1,000+"), with the generic plan forced. Inside a request the context names the user as well as the
  team, and the `tenant_members` policies are `tenant_isolation OR own_memberships`: for that OR the
  generic plan chose a BitmapOr of the two policies' indexes, and a bitmap is built in full before its
  first row is read, so the LIMIT stopped nothing. A 50,000-member team's count read all 50,000 index
  entries (361 buffers; as the app role in the team's context, 2.9 ms a call against 0.09 ms for a
  50-member team), on every page of the member list and every search: most of what the large team's
  team page cost over the small team's (bench/size.py, "search, 1 character, full page" at 1.99 x). The
  function now says `enable_bitmapscan = off`: the count walks the `(tenant_id, joined_at, id)` index
  from the team's first member and stops at the cap (1,001 entries: 24 buffers, about 0.5 ms).
- **A page after a key.** `nyxcore_member_page` (0018) compared `(joined_at, id)` with
  `(coalesce(after_at, ...), coalesce(after_id, ...))`. PostgreSQL may use a condition as an index
  condition ahead of the row-level-security policies only when it cannot leak, and it counts a
  `coalesce` of a parameter as one that might: in a custom plan the `coalesce` of constants is folded
  away, but once a connection keeps the generic plan (after five calls, when the calls so far were
  cheap: a connection that served small teams) the key became a filter, checked on every member from
  the team's first one. A middle page of the 50,000-member team read 25,051 index entries, 17-28 ms
  (bench/size.py's cases run interleaved, small and large on one connection). The function now puts the
  key in two variables first, plain parameters of its statements: an index condition in every plan.

Isolation is unchanged: `nyxcore_seat_counts` is the same SECURITY INVOKER function under the policies of
`tenant_members` and `invitations` (a planner setting changes which index is read, not which rows are
visible); `nyxcore_member_page` is 0018's SECURITY DEFINER function with the same statements, the same
team checks (the context's team, and only when the caller names it) and the same inviter rule.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

SEAT_COUNTS = "nyxcore_seat_counts(uuid, integer)"
PAGE = "nyxcore_member_page(uuid, timestamptz, uuid, boolean, integer, uuid[])"
WINDOW = "nyxcore_member_window(text, timestamptz, uuid, boolean, integer, integer)"
START = {"": ("-infinity", "00000000-0000-0000-0000-000000000000"), " DESC": ("infinity", "ffffffff-ffff-ffff-ffff-ffffffffffff")}
VISIBLE_INVITER = (
    f"i.id = {rls.USER} OR EXISTS (SELECT 1 FROM public.tenant_members AS im WHERE im.tenant_id = team AND im.user_id = i.id)"
)


def _page_query(order: str, only: bool, *, keyed: bool) -> str:
    """One of nyxcore_member_page's four statements, as 0018 wrote it, comparing the key with the variables
    `key_at` and `key_id` (`keyed`) or with 0018's `coalesce`s of the arguments."""
    compare = ">" if not order else "<"
    at, key = START[order]
    cursor = "(key_at, key_id)" if keyed else f"(coalesce(after_at, '{at}'), coalesce(after_id, '{key}'))"
    members = "public.tenant_members AS m"
    if only:
        members = f"unnest(member_ids) AS chosen(id) JOIN {members} ON m.id = chosen.id"
    return f"""
        SELECT m.id, m.user_id, m.role::text, m.joined_at, u.name::text, u.email::text,
               u.two_factor_enabled_at IS NOT NULL, i.name::text, m.ends_at
        FROM {members}
        JOIN public.users AS u ON u.id = m.user_id
        LEFT JOIN public.users AS i ON i.id = m.invited_by AND ({VISIBLE_INVITER})
        WHERE m.tenant_id = team
          AND (m.joined_at, m.id) {compare} {cursor}
          AND (m.ends_at IS NULL OR m.ends_at > now())
        ORDER BY m.joined_at{order}, m.id{order} LIMIT max_rows"""


# The key as plain values: a parameter of each statement, never a coalesce of one.
KEY_DECLARE = """
        DECLARE
            key_at timestamptz;
            key_id uuid;"""
KEY_PREPARE = f"""
            IF backwards THEN
                key_at := coalesce(after_at, '{START[" DESC"][0]}');
                key_id := coalesce(after_id, '{START[" DESC"][1]}');
            ELSE
                key_at := coalesce(after_at, '{START[""][0]}');
                key_id := coalesce(after_id, '{START[""][1]}');
            END IF;"""


def _page_function(*, keyed: bool) -> str:
    declare, prepare = (KEY_DECLARE, KEY_PREPARE) if keyed else ("", "")
    return f"""
        CREATE OR REPLACE FUNCTION public.nyxcore_member_page(
            team uuid, after_at timestamptz, after_id uuid, backwards boolean, max_rows integer, member_ids uuid[]
        )
        RETURNS TABLE (id uuid, user_id uuid, role text, joined_at timestamptz, name text, email text,
                       two_factor boolean, inviter_name text, ends_at timestamptz)
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $${declare}
        BEGIN
            IF team IS NULL OR team IS DISTINCT FROM {rls.TENANT} THEN
                RETURN;  -- only the context's team, and only when the caller names it
            END IF;{prepare}
            IF member_ids IS NULL AND NOT backwards THEN
                RETURN QUERY {_page_query("", only=False, keyed=keyed)};
            ELSIF member_ids IS NULL THEN
                RETURN QUERY {_page_query(" DESC", only=False, keyed=keyed)};
            ELSIF NOT backwards THEN
                RETURN QUERY {_page_query("", only=True, keyed=keyed)};
            ELSE
                RETURN QUERY {_page_query(" DESC", only=True, keyed=keyed)};
            END IF;
        END
        $$
        """


def _window_walk(order: str, *, keyed: bool) -> str:
    """One of nyxcore_member_window's two statements, as 0017 wrote it, with the key compared as above."""
    compare = ">" if not order else "<"
    at, key = START[order]
    cursor = "(key_at, key_id)" if keyed else f"(coalesce(after_at, '{at}'), coalesce(after_id, '{key}'))"
    return f"""
            SELECT w.id FROM (
                SELECT m.id, m.user_id, m.joined_at, m.ends_at FROM public.tenant_members AS m
                WHERE m.tenant_id = {rls.TENANT}
                  AND (m.joined_at, m.id) {compare} {cursor}
                ORDER BY m.joined_at{order}, m.id{order} LIMIT scan
            ) AS w JOIN public.users AS u ON u.id = w.user_id
            WHERE (lower(u.name) LIKE pattern ESCAPE '\\' OR u.email LIKE pattern ESCAPE '\\')
              AND (w.ends_at IS NULL OR w.ends_at > now())  -- walked past, not matched: as the list reads it
            ORDER BY w.joined_at{order}, w.id{order} LIMIT max_rows"""


def _window_function(*, keyed: bool) -> str:
    declare, prepare = (KEY_DECLARE, KEY_PREPARE) if keyed else ("", "")
    return f"""
        CREATE OR REPLACE FUNCTION public.nyxcore_member_window(
            pattern text, after_at timestamptz, after_id uuid, backwards boolean, scan integer, max_rows integer
        )
        RETURNS SETOF uuid
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $${declare}
        BEGIN{prepare}
            IF backwards THEN
                RETURN QUERY {_window_walk(" DESC", keyed=keyed)};
            ELSE
                RETURN QUERY {_window_walk("", keyed=keyed)};
            END IF;
        END
        $$
        """


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    op.execute(f"ALTER FUNCTION public.{SEAT_COUNTS} SET enable_bitmapscan = off")
    op.execute(_page_function(keyed=True))
    op.execute(_window_function(keyed=True))
    for signature in (SEAT_COUNTS, PAGE, WINDOW):
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION public.{SEAT_COUNTS} RESET enable_bitmapscan")  # 0021's function
    op.execute(_page_function(keyed=False))  # 0018's statements (its body began with the team check too)
    op.execute(_window_function(keyed=False))  # 0017's statements
