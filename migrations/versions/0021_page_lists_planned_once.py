"""NyxBook's list, the team page's open invitations and its seat count planned once per connection (issue 15).

Every request planned these statements afresh: about 0.40 ms (the notes) and 0.54 ms (the
invitations, loaded as whole ORM objects with their inviter and outbox row) of PostgreSQL CPU, more
than executing them, because the row-level-security policies of `users` (`own_account OR
team_members OR inviter_by_token`) are planned into each. psycopg2 sends statements unprepared and
PgBouncer's transaction pooling rules out prepared statements; a PL/pgSQL function's statements are
planned once per connection instead.

- `nyxcore_note_lines(team, max_rows, skip)`: a page of notes, newest change first: id, title, when it
  changed, its author's name, and how many notes the team has (no bodies);
- `nyxcore_pending_invitations(team, max_rows, skip)`: a page of open invitations, newest first, with
  the inviter's name, the state of their e-mail in the outbox, and how many are open (no token hashes,
  no sealed bodies: only whether a body is still there);
- `nyxcore_seat_counts(team, cap)`: the team page's seat count (live members up to `cap`, invitations
  holding a seat), which the member list's statement planned around `nyxcore_member_page` on every
  request (0.15 of its 0.16 ms of planning, measured as the app role).

Isolation: all three are SECURITY INVOKER, so every statement in them runs as the app role under the same
policies as the statements they replace (`notes`, `invitations`, `outbox_emails` and `tenant_members`
by their tenant policies, `users` by its own policies: an author or inviter the policies hide reads NULL, as
the LEFT JOINs under RLS gave). They also filter by the team the caller names (the Actor's tenant),
as a query outside the ORM's scoping must: naming another team than the context's gives no row (no
seat).

The three functions here say `plan_cache_mode = force_generic_plan`, so no call re-plans: their
statements read one team's rows by its index whatever the parameters. `nyxcore_member_page` (0018) is
left to PostgreSQL's choice: it planned its statements anew for a connection's first five calls (1.0-1.1
ms a call against 0.36-0.48 with the generic plan, on the bench seed) and then keeps the generic plan
for a small team; forced generic, its plan for a 50,000-member team's middle page sorted every member
(bench/size.py: p95 10.8 to 33.7 ms), which the custom plans it keeps choosing there do not.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

NOTE_LINES = "nyxcore_note_lines(uuid, integer, integer)"
PENDING = "nyxcore_pending_invitations(uuid, integer, integer)"
SEAT_COUNTS = "nyxcore_seat_counts(uuid, integer)"
SETTINGS = "SET search_path = pg_catalog, pg_temp\n        SET plan_cache_mode = force_generic_plan"

# The total is an uncorrelated sub-select over the notes alone (counted once, and not after joining
# every note's author, a row under the users policies, as `count(*) OVER ()` would).
NOTE_LINES_BODY = f"""
        CREATE FUNCTION public.nyxcore_note_lines(team uuid, max_rows integer, skip integer)
        RETURNS TABLE (id uuid, title text, updated_at timestamptz, author_name text, total bigint)
        LANGUAGE plpgsql STABLE SECURITY INVOKER ROWS 50
        {SETTINGS}
        AS $$
        BEGIN
            RETURN QUERY
            SELECT n.id, n.title::text, n.updated_at, u.name::text,
                   (SELECT count(*) FROM public.notes AS c WHERE c.tenant_id = team)
            FROM public.notes AS n
            LEFT JOIN public.users AS u ON u.id = n.author_id
            WHERE n.tenant_id = team
            ORDER BY n.updated_at DESC, n.id DESC
            LIMIT max_rows OFFSET skip;
        END
        $$
        """

PENDING_BODY = f"""
        CREATE FUNCTION public.nyxcore_pending_invitations(team uuid, max_rows integer, skip integer)
        RETURNS TABLE (id uuid, email text, role text, inviter_name text, expires_at timestamptz,
                       reminded_at timestamptz, queued boolean, queued_at timestamptz, sent_at timestamptz,
                       attempts integer, has_body boolean, failure text, last_error text,
                       retry_at timestamptz, total bigint)
        LANGUAGE plpgsql STABLE SECURITY INVOKER ROWS 10
        {SETTINGS}
        AS $$
        BEGIN
            RETURN QUERY
            SELECT i.id, i.email::text, i.role::text, u.name::text, i.expires_at, i.reminded_at,
                   o.id IS NOT NULL, o.created_at, o.sent_at, o.attempts, o.body_ciphertext IS NOT NULL,
                   o.failure::text, o.last_error::text, o.retry_at,
                   (SELECT count(*) FROM public.invitations AS c
                    WHERE c.tenant_id = team AND c.consumed_at IS NULL AND c.revoked_at IS NULL)
            FROM public.invitations AS i
            LEFT JOIN public.users AS u ON u.id = i.invited_by
            LEFT JOIN public.outbox_emails AS o ON o.id = i.outbox_email_id
            WHERE i.tenant_id = team AND i.consumed_at IS NULL AND i.revoked_at IS NULL
            ORDER BY i.created_at DESC, i.id DESC
            LIMIT max_rows OFFSET skip;
        END
        $$
        """

# What the seat count shows next to the member list, as services/seats.py counts it: live memberships
# (counted up to `cap`, as member_list._capped_count does) and invitations holding a seat.
SEAT_COUNTS_BODY = f"""
        CREATE FUNCTION public.nyxcore_seat_counts(team uuid, cap integer)
        RETURNS TABLE (members bigint, open_invitations bigint)
        LANGUAGE plpgsql STABLE SECURITY INVOKER ROWS 1
        {SETTINGS}
        AS $$
        BEGIN
            RETURN QUERY
            SELECT (SELECT count(*) FROM (
                        SELECT 1 FROM public.tenant_members AS m
                        WHERE m.tenant_id = team AND (m.ends_at IS NULL OR m.ends_at > now())
                        LIMIT cap) AS live),
                   (SELECT count(*) FROM public.invitations AS i
                    WHERE i.tenant_id = team AND i.consumed_at IS NULL AND i.revoked_at IS NULL
                      AND i.expires_at > now());
        END
        $$
        """


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    for signature, body in (
        (NOTE_LINES, NOTE_LINES_BODY),
        (PENDING, PENDING_BODY),
        (SEAT_COUNTS, SEAT_COUNTS_BODY),
    ):
        op.execute(body)
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in (NOTE_LINES, PENDING, SEAT_COUNTS):
        op.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
