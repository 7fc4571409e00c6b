"""The member list and member search at 50,000 members (issue 15, "Flat with size").

- The `team_members` policy on `users` is the same rule written as a per-row `EXISTS` on the
  `(tenant_id, user_id)` unique index: "a member of the active team". The `IN (sub-select)` form
  made PostgreSQL hash every member of the team before it could show one user (a sequential scan of
  `tenant_members` per statement); `EXISTS` lets it check only the rows a page reads, under a LIMIT.
- `pg_trgm` and trigram GIN indexes on `lower(users.name)` and `users.email`, for `LIKE '%term%'`.
  `pg_trgm` is a trusted extension: the owner role (the database's owner) may create it.
- `nyxcore_member_matches(pattern, after_at, after_id, backwards, max_rows)`: the member ids of the
  first `max_rows` of the active team's members after (or before) a key whose lower-case name or
  e-mail address is LIKE `pattern`. Row-level security on `users` keeps the planner from using an
  index for a `LIKE` (the operator is not leakproof, so it must run after the policy on every row);
  this SECURITY DEFINER function lets it choose the trigram indexes (a rare term) or the join order
  (a common one), and returns no more than the app role may read anyway: ids of the team in the
  context (`app.tenant_id`); none without one.
- `nyxcore_member_window(pattern, after_at, after_id, backwards, scan, max_rows)`: for terms the
  trigrams cannot serve (one or two characters), the matches among the next `scan` members of the
  context's team after (or before) a key, in join order: member ids, checked against the `users`
  policy by the caller only for the rows it shows.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

MATCHES = "nyxcore_member_matches(text, timestamptz, uuid, boolean, integer)"
WINDOW = "nyxcore_member_window(text, timestamptz, uuid, boolean, integer, integer)"
FUNCTIONS = (MATCHES, WINDOW)
NO_ID = {"-infinity": "00000000-0000-0000-0000-000000000000", "infinity": "ffffffff-ffff-ffff-ffff-ffffffffffff"}
IN_TEAM = f"m.tenant_id = {rls.TENANT} AND m.user_id = users.id"  # a member of the active team


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    _team_members_policy(f"EXISTS (SELECT 1 FROM public.tenant_members AS m WHERE {IN_TEAM})")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX ix_users_name_trgm ON users USING gin (lower(name) gin_trgm_ops)")
    op.execute("CREATE INDEX ix_users_email_trgm ON users USING gin (email gin_trgm_ops)")
    _matches_function()
    _window_function()
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {app_role}")


def _matches_function() -> None:
    """nyxcore_member_matches: the first `max_rows` matches of the whole team after (before) a key.

    users is not FORCEd: its owner, this function's definer, reads it without the policies, so the
    planner may use the trigram indexes; the team is still the context's, read once and given to the
    query as a value (EXECUTE plans with it, and with the pattern: a rare term is looked up in the
    trigram indexes, a common one found by walking the team in join order until `max_rows`).
    """
    searches = []
    for order, compare, start in (("", ">", "-infinity"), (" DESC", "<", "infinity")):
        searches.append(
            f"""$q$SELECT m.id FROM public.tenant_members AS m JOIN public.users AS u ON u.id = m.user_id
                WHERE m.tenant_id = $1 AND (m.joined_at, m.id) {compare} ($3, $4)
                  AND (lower(u.name) LIKE $2 ESCAPE '\\' OR u.email LIKE $2 ESCAPE '\\')
                  AND (m.ends_at IS NULL OR m.ends_at > now())
                ORDER BY m.joined_at{order}, m.id{order} LIMIT $5$q$
                USING team, pattern, coalesce(after_at, '{start}'), coalesce(after_id, '{NO_ID[start]}'), max_rows"""
        )
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_member_matches(
            pattern text, after_at timestamptz, after_id uuid, backwards boolean, max_rows integer
        )
        RETURNS SETOF uuid
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            team uuid := {rls.TENANT};
        BEGIN
            IF team IS NULL THEN
                RETURN;
            ELSIF backwards THEN
                RETURN QUERY EXECUTE {searches[1]};
            ELSE
                RETURN QUERY EXECUTE {searches[0]};
            END IF;
        END
        $$
        """
    )


def _window_function() -> None:
    """nyxcore_member_window: a short term's matches among the next `scan` members from a key.

    The same reading as the policy-checked statement (the active team's members in join order after
    or before a key, at most `scan` of them, those whose name or address is LIKE `pattern`, at most
    `max_rows`), without checking the `users` policy on every member walked past: that check was
    three quarters of the cost. It returns member ids of the context's team only.
    """
    walks = []
    for order, compare, start in (("", ">", "-infinity"), (" DESC", "<", "infinity")):
        walks.append(
            f"""
            SELECT w.id FROM (
                SELECT m.id, m.user_id, m.joined_at, m.ends_at FROM public.tenant_members AS m
                WHERE m.tenant_id = {rls.TENANT}
                  AND (m.joined_at, m.id) {compare} (coalesce(after_at, '{start}'), coalesce(after_id, '{NO_ID[start]}'))
                ORDER BY m.joined_at{order}, m.id{order} LIMIT scan
            ) AS w JOIN public.users AS u ON u.id = w.user_id
            WHERE (lower(u.name) LIKE pattern ESCAPE '\\' OR u.email LIKE pattern ESCAPE '\\')
              AND (w.ends_at IS NULL OR w.ends_at > now())  -- walked past, not matched: as the list reads it
            ORDER BY w.joined_at{order}, w.id{order} LIMIT max_rows"""
        )
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_member_window(
            pattern text, after_at timestamptz, after_id uuid, backwards boolean, scan integer, max_rows integer
        )
        RETURNS SETOF uuid
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            IF backwards THEN
                RETURN QUERY {walks[1]};
            ELSE
                RETURN QUERY {walks[0]};
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
    op.execute("DROP INDEX IF EXISTS ix_users_email_trgm")
    op.execute("DROP INDEX IF EXISTS ix_users_name_trgm")
    # Only if this role made it (a superuser may have installed it for something else).
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm' "
        "AND extowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)) "
        "THEN DROP EXTENSION pg_trgm; END IF; END $$"
    )
    _team_members_policy(
        f"id IN (SELECT m.user_id FROM public.tenant_members AS m WHERE m.tenant_id = {rls.TENANT})"
    )


def _team_members_policy(condition: str) -> None:
    op.execute("DROP POLICY IF EXISTS team_members ON users")
    op.execute(f"CREATE POLICY team_members ON users FOR SELECT USING ({condition})")
