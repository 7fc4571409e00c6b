"""A membership past its end date no longer hides its team from `nyxcore_joinable_teams()`.

The application treats a membership whose `ends_at` has passed as gone at once
(`TenantMember.live_at`), before the beat task removes the row; migration 0011's discovery function
still counted such a row as "in the team", so for up to a beat interval the team was not offered
to join again by domain. The function is replaced with the same body and the same test the model
uses (`ends_at IS NULL OR ends_at > now()`); its owner, grants and settings are kept by
CREATE OR REPLACE. The body is repeated from 0011 on purpose: a migration is a snapshot.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from alembic import op

from nyxcore import rls

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

LIVE = "AND (m.ends_at IS NULL OR m.ends_at > now())"  # TenantMember.live_at, in the function's SQL


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_discovery_function(LIVE))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_discovery_function(""))


def _discovery_function(live: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION public.nyxcore_joinable_teams()
        RETURNS TABLE (team_id uuid, team_name text, join_mode text, join_role text)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            PERFORM set_config('app.domain_discovery', 'on', true);
            RETURN QUERY
                SELECT t.id, t.name::text, d.join_mode::text, d.join_role::text
                FROM public.users AS u
                JOIN public.team_domains AS d
                  ON d.domain = split_part(u.email, '@', 2) AND d.verified_at IS NOT NULL
                JOIN public.tenants AS t ON t.id = d.tenant_id
                WHERE u.id = {rls.USER}
                  AND u.email_verified_at IS NOT NULL
                  AND NOT EXISTS (
                      SELECT 1 FROM public.tenant_members AS m
                      WHERE m.tenant_id = t.id AND m.user_id = u.id {live}
                  )
                ORDER BY t.name, t.id;
            PERFORM set_config('app.domain_discovery', '', true);
        END
        $$
        """
