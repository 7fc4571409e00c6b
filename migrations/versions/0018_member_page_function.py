"""The team page's member rows through one SECURITY DEFINER function with a cached plan (issue 15).

Since migration 0017 the member list was flat with size, but on a 50-member team PostgreSQL spent
more on the statement than on its rows: each request planned it afresh, with the `users` policies
(`own_account OR team_members OR inviter_by_token`, two of them sub-selects) expanded twice, for the
member and for the inviter; planning was about two thirds of the statement's server CPU.

`nyxcore_member_page(team, after_at, after_id, backwards, max_rows, member_ids)` returns the columns the
member list shows for the first `max_rows` members of `team` after (or before) a key, in join order,
optionally only those whose ids are in `member_ids` (a search's matches, found by 0017's functions). As a
PL/pgSQL function its four statements are planned once per connection, not once per request.

Isolation is not weaker than the `users` policy it reads past (`users` is not FORCEd, so its owner,
the definer, reads it without policies, as in 0017's functions):
- it answers only for the team in the context (`app.tenant_id`) and only when the caller names the
  same team (an explicit filter; anything else returns no row);
- a member row's user is a member of that team, which the `team_members` policy shows;
- an inviter's name is given only when the `team_members` policy would show that user (a membership
  in the team) or it is the acting user (`own_account`); otherwise NULL, as the LEFT JOIN under the
  policy gave;
- `tenant_members` stays FORCEd: its policies hold inside the function too.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

PAGE = "nyxcore_member_page(uuid, timestamptz, uuid, boolean, integer, uuid[])"
START = {"": ("-infinity", "00000000-0000-0000-0000-000000000000"), " DESC": ("infinity", "ffffffff-ffff-ffff-ffff-ffffffffffff")}
VISIBLE_INVITER = (
    f"i.id = {rls.USER} OR EXISTS (SELECT 1 FROM public.tenant_members AS im WHERE im.tenant_id = team AND im.user_id = i.id)"
)


def _page_query(order: str, only: bool) -> str:
    """One of the function's four statements: a direction (`order`), all members or only `member_ids`.

    Chosen members are read by primary key from the array (a join, not `id = ANY(...)`: with that,
    the cached generic plan ANDed a bitmap of every member of the team to the ids, 2 ms at 50,000).
    """
    compare = ">" if not order else "<"
    at, key = START[order]
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
          AND (m.joined_at, m.id) {compare} (coalesce(after_at, '{at}'), coalesce(after_id, '{key}'))
          AND (m.ends_at IS NULL OR m.ends_at > now())
        ORDER BY m.joined_at{order}, m.id{order} LIMIT max_rows"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_member_page(
            team uuid, after_at timestamptz, after_id uuid, backwards boolean, max_rows integer, member_ids uuid[]
        )
        RETURNS TABLE (id uuid, user_id uuid, role text, joined_at timestamptz, name text, email text,
                       two_factor boolean, inviter_name text, ends_at timestamptz)
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            IF team IS NULL OR team IS DISTINCT FROM {rls.TENANT} THEN
                RETURN;  -- only the context's team, and only when the caller names it
            ELSIF member_ids IS NULL AND NOT backwards THEN
                RETURN QUERY {_page_query("", only=False)};
            ELSIF member_ids IS NULL THEN
                RETURN QUERY {_page_query(" DESC", only=False)};
            ELSIF NOT backwards THEN
                RETURN QUERY {_page_query("", only=True)};
            ELSE
                RETURN QUERY {_page_query(" DESC", only=True)};
            END IF;
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION public.{PAGE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{PAGE} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS public.{PAGE}")
