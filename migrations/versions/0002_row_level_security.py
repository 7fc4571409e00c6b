"""Row-level security on every tenant-owned table, and the app role's privileges.

Policies compare uuid to uuid (`tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid`)
so the tenant_id indexes are used; an unset or ended setting reads '' and so matches no row.
The narrow exceptions are SELECT-only policies (or UPDATE for consuming an invitation):
a user sees their own memberships and their teams in every team (team switcher), and an
invitation and its team are visible to the request that presents the invitation's token.

On SQLite (development) there is no RLS; this migration only records itself.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import grant_app_privileges, quote_role

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
USER = "NULLIF(current_setting('app.user_id', true), '')::uuid"
INVITE = "NULLIF(current_setting('app.invite_token_hash', true), '')"
TENANT_TABLES = ("tenant_members", "invitations", "github_tokens", "audit_events", "notes")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    quote_role(app_role)
    if bind.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": app_role}).first() is None:
        raise RuntimeError(
            f"The app database role {app_role!r} does not exist. Create it as a PostgreSQL superuser "
            "first (README.md, \"Installing on PostgreSQL\", step 1), or set NYXCORE_APP_ROLE to the "
            "app role you created."
        )
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")

    for table in (*TENANT_TABLES, "tenants"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for table in TENANT_TABLES:
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
    op.execute(f"CREATE POLICY tenant_isolation ON tenants USING (id = {TENANT}) WITH CHECK (id = {TENANT})")

    op.execute(f"CREATE POLICY own_memberships ON tenant_members FOR SELECT USING (user_id = {USER})")
    op.execute(
        "CREATE POLICY member_teams ON tenants FOR SELECT USING ("
        f"id IN (SELECT m.tenant_id FROM tenant_members m WHERE m.user_id = {USER}))"
    )
    op.execute(f"CREATE POLICY invitation_by_token ON invitations FOR SELECT USING (token_hash = {INVITE})")
    op.execute(
        "CREATE POLICY consume_invitation_by_token ON invitations FOR UPDATE "
        f"USING (token_hash = {INVITE}) WITH CHECK (token_hash = {INVITE})"
    )
    op.execute(
        "CREATE POLICY invited_team ON tenants FOR SELECT USING ("
        f"id IN (SELECT i.tenant_id FROM invitations i WHERE i.token_hash = {INVITE}))"
    )
    grant_app_privileges(bind, app_role)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    policies = {
        "tenants": ("tenant_isolation", "member_teams", "invited_team"),
        "tenant_members": ("tenant_isolation", "own_memberships"),
        "invitations": ("tenant_isolation", "invitation_by_token", "consume_invitation_by_token"),
        "github_tokens": ("tenant_isolation",),
        "audit_events": ("tenant_isolation",),
        "notes": ("tenant_isolation",),
    }
    for table, names in policies.items():
        for name in names:
            op.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
