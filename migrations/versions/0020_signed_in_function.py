"""Every signed-in request's session load through one PL/pgSQL function, planned once per connection (issue 15).

The statement that loads a signed-in request's user, live session, active membership (with its team)
and the switcher's teams was planned afresh on every request: the row-level-security policies of
`users`, `user_sessions`, `tenant_members` and `tenants` expanded into it, with the switcher's
sub-select, cost about 0.7-1.3 ms of planning for 0.2 ms of execution, on every signed-in page.

`nyxcore_signed_in(token_hash, user_id, moment, idle_since, wanted_team, max_choices)` runs the same
statement inside PL/pgSQL, whose plan is kept per connection (which PgBouncer's transaction pooling
allows, unlike prepared statements). It returns one row or none: the columns the ORM loads of the user, the session, the
membership and its team, named `<part>_<column>` (the membership's and team's NULL when there is no
such membership), and the switcher's `max_choices` most recently joined teams as one JSON array of
`[tenant_id, name, role]`. (Not the tables' row types: the app role may not read a user's password
hash, which a whole-row value carries.)

Isolation is unchanged: the function is SECURITY INVOKER, so it runs as the app role and every
table's row-level-security policies apply to its statement exactly as they applied to the statement it
replaces (own account, own sessions, own memberships and their teams, under the context's
`app.user_id`). It adds an explicit filter on top: the session must be `user_id`'s and carry
`token_hash`, and be neither revoked, expired nor idle since `idle_since`.

The plan: `plan_cache_mode = force_generic_plan` on the function, so that the plan cache does not
keep planning custom plans for its parameters (it would judge them cheaper, the parameters being
equalities on unique keys); the generic plan reads the same indexes.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

SIGNED_IN = "nyxcore_signed_in(text, uuid, timestamptz, timestamptz, uuid, integer)"
# What the function returns of each table (the columns the ORM loads; a user's password hash is not
# among them, nor readable by the app role), each as `<part>_<column>`, and the table's alias.
PARTS = (
    ("account", "usr", ("email text", "name text", "created_at timestamptz", "two_factor_enabled_at timestamptz",
                     "email_verified_at timestamptz", "time_zone text", "last_tenant_id uuid", "id uuid")),
    ("session", "ses", ("user_id uuid", "token_hash text", "created_at timestamptz", "last_seen_at timestamptz",
                        "expires_at timestamptz", "revoked_at timestamptz", "user_agent text", "ip_address text",
                        "id uuid")),
    ("membership", "mem", ("user_id uuid", "role text", "invited_at timestamptz", "invited_by uuid",
                           "joined_at timestamptz", "ends_at timestamptz", "end_warned_at timestamptz",
                           "tenant_id uuid", "id uuid")),
    ("team", "ten", ("name text", "slug text", "created_at timestamptz", "created_by uuid", "id uuid",
                     "require_two_factor boolean", "allowed_email_domains text", "seat_limit integer")),
)  # fmt: skip


def _returned() -> str:
    """The RETURNS TABLE list: every part's columns, then the switcher's choices."""
    columns = [f"{part}_{spec}" for part, _, specs in PARTS for spec in specs]
    return ", ".join([*columns, "choices json"])


def _selected() -> str:
    """The statement's select list, in _returned()'s order (text columns cast: RETURN QUERY wants exact types)."""
    values = []
    for _, alias, specs in PARTS:
        for spec in specs:
            name, kind = spec.split()
            values.append(f"{alias}.{name}::text" if kind == "text" else f"{alias}.{name}")
    return ", ".join(values)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    # The membership is a LATERAL read by the (tenant_id, user_id) key (LIMIT 1 keeps it from being
    # flattened into a join): a generic plan cannot know whether `wanted_team` is NULL, and with a
    # plain join on coalesce(...) it read and hashed every membership of the user. The switcher's
    # team name is a sub-select per membership (it runs for the rows under the LIMIT only), and
    # json_agg orders the rows itself: as services/teams.py's SWITCHER_CHOICES does.
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_signed_in(
            token_hash text, user_id uuid, moment timestamptz, idle_since timestamptz, wanted_team uuid,
            max_choices integer
        )
        RETURNS TABLE ({_returned()})
        LANGUAGE plpgsql STABLE SECURITY INVOKER ROWS 1
        SET search_path = pg_catalog, pg_temp
        SET plan_cache_mode = force_generic_plan
        AS $$
        BEGIN
            RETURN QUERY
            SELECT {_selected()},
                   (SELECT json_agg(json_build_array(latest.tenant_id, latest.name, latest.role)
                                    ORDER BY latest.joined_at DESC, latest.id DESC)
                    FROM (SELECT lm.tenant_id, (SELECT lt.name FROM public.tenants AS lt WHERE lt.id = lm.tenant_id) AS name,
                                 lm.role, lm.joined_at, lm.id
                          FROM public.tenant_members AS lm
                          WHERE lm.user_id = nyxcore_signed_in.user_id AND (lm.ends_at IS NULL OR lm.ends_at > moment)
                          ORDER BY lm.joined_at DESC, lm.id DESC
                          LIMIT max_choices) AS latest)
            FROM public.users AS usr
            JOIN public.user_sessions AS ses ON ses.user_id = usr.id
            LEFT JOIN LATERAL (
                SELECT m.* FROM public.tenant_members AS m
                WHERE m.tenant_id = coalesce(wanted_team, usr.last_tenant_id)
                  AND m.user_id = usr.id
                  AND (m.ends_at IS NULL OR m.ends_at > moment)
                LIMIT 1
            ) AS mem ON true
            LEFT JOIN public.tenants AS ten ON ten.id = mem.tenant_id
            WHERE ses.token_hash = nyxcore_signed_in.token_hash
              AND ses.user_id = nyxcore_signed_in.user_id
              AND ses.revoked_at IS NULL
              AND ses.expires_at > moment
              AND ses.last_seen_at > idle_since;
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION public.{SIGNED_IN} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{SIGNED_IN} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS public.{SIGNED_IN}")
