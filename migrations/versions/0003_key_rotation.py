"""Key rotation across teams: tell the app role which teams hold a token under an old key, nothing more.

`flask nyxcore keys rotate` runs as the app role. Under row-level security that role sees a team's
github_tokens row only with that team's context set, so it cannot find the rows to re-encrypt by
itself. The owner role is no way round it: FORCE ROW LEVEL SECURITY holds the table owner too, and
a BYPASSRLS role or a superuser connection is exactly what the design rules out. Hence:

- `nyxcore_tenants_with_stale_github_tokens(primary_key_id)` returns the ids of the teams whose
  token is sealed under another key, and `nyxcore_count_github_tokens_under_key(key_id)` a count:
  team ids and a number, never a ciphertext. Both are SECURITY DEFINER, owned by the role running
  this migration (the owner role), with a fixed search_path, schema-qualified names, EXECUTE
  revoked from PUBLIC and granted to the app role.
- As the owner is held by RLS as well, the functions see the rows through one narrow policy:
  SELECT only, for the owner role only, and only while `app.key_rotation_scan` is 'on', which each
  function sets for its own query and clears before returning. The app role may set that setting
  too, but the policy does not apply to it. The owner could read these rows anyway (it owns the
  table and may change its policies), so the policy gives it nothing new; it only keeps an
  accidental owner query without a team context returning nothing, as before.

The CLI then re-encrypts team by team as the app role, with each team's context set, under the
ordinary tenant_isolation policy.

On SQLite (development) there is no RLS; this migration only records itself.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCAN_ON = "PERFORM set_config('app.key_rotation_scan', 'on', true);"
SCAN_OFF = "PERFORM set_config('app.key_rotation_scan', '', true);"
FUNCTIONS = (
    "nyxcore_tenants_with_stale_github_tokens(text)",
    "nyxcore_count_github_tokens_under_key(text)",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == current_app.config["NYXCORE_APP_ROLE"]:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")

    op.execute(
        "CREATE POLICY key_rotation_scan ON github_tokens FOR SELECT TO CURRENT_USER "
        "USING (current_setting('app.key_rotation_scan', true) = 'on')"
    )
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_tenants_with_stale_github_tokens(primary_key_id text)
        RETURNS SETOF uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            {SCAN_ON}
            RETURN QUERY
                SELECT t.tenant_id FROM public.github_tokens AS t
                WHERE t.key_id <> primary_key_id
                ORDER BY t.tenant_id;
            {SCAN_OFF}
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_count_github_tokens_under_key(wanted_key_id text)
        RETURNS bigint
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            found bigint;
        BEGIN
            {SCAN_ON}
            SELECT count(*) INTO found FROM public.github_tokens AS t WHERE t.key_id = wanted_key_id;
            {SCAN_OFF}
            RETURN found;
        END
        $$
        """
    )
    for signature in FUNCTIONS:
        # Functions are executable by PUBLIC unless revoked.
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {app_role}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
    op.execute("DROP POLICY IF EXISTS key_rotation_scan ON github_tokens")
