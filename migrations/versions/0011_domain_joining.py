"""Domain policy, verified domains and join requests.

- `tenants.allowed_email_domains`: the team's allowlist of e-mail domains (empty: anyone).
- `team_domains`: domains a team claims, verified by a DNS TXT record; a verified domain belongs to
  one team (partial unique index). Forced RLS: the team's own rows.
- `join_requests`: someone at a verified domain asking to join. Forced RLS: the team's rows; the
  requester also reads their own requests (`own_join_requests`, SELECT only).
- A person outside a team learns of it only through `nyxcore_joinable_teams()` (SECURITY DEFINER,
  search_path pinned, EXECUTE for the app role only): for the acting user (`app.user_id`) with a
  verified address, the id, name, join mode and role of each team that verified their address's
  domain and that they are not in. Nothing else of any team. Like 0003/0004/0008, its owner is held
  by FORCE too and reads the three tables only through SELECT policies for itself that hold while
  `app.domain_discovery` is 'on', which the function sets and clears around its query.

On SQLite (development) only the tables and the column are made; there is no RLS.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FUNCTION = "nyxcore_joinable_teams()"
DISCOVERY_SWITCH = "current_setting('app.domain_discovery', true) = 'on'"
DISCOVERY_TABLES = ("team_domains", "tenants", "tenant_members")
ROLE_VALUES = ("owner", "admin", "member", "viewer")


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allowed_email_domains", sa.String(length=1000), server_default="", nullable=False)
        )
    _team_domains()
    _join_requests()
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")
    for table in ("team_domains", "join_requests"):
        for statement in rls.protect_tenant_table(table):
            op.execute(statement)
    op.execute(f"CREATE POLICY own_join_requests ON join_requests FOR SELECT USING (user_id = {rls.USER})")
    for table in DISCOVERY_TABLES:
        op.execute(
            f"CREATE POLICY domain_discovery ON {table} FOR SELECT TO CURRENT_USER USING ({DISCOVERY_SWITCH})"
        )
    _discovery_function()
    op.execute(f"REVOKE ALL ON FUNCTION public.{FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{FUNCTION} TO {quote_role(app_role)}")


def _role_column(name: str) -> sa.Column:  # type: ignore[type-arg]
    role = sa.Enum(*ROLE_VALUES, name="tenant_role", native_enum=False, create_constraint=True, length=16)
    return sa.Column(name, role, nullable=False)


def _team_domains() -> None:
    op.create_table(
        "team_domains",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("join_mode", sa.String(length=16), server_default="request", nullable=False),
        _role_column("join_role"),
        sa.Column("added_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "join_mode IN ('request', 'direct')", name=op.f("ck_team_domains_join_mode_known")
        ),
        sa.CheckConstraint(
            "join_role IN ('member', 'viewer')", name=op.f("ck_team_domains_join_role_allowed")
        ),
        sa.ForeignKeyConstraint(
            ["added_by"], ["users.id"], name=op.f("fk_team_domains_added_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_team_domains_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_domains")),
        sa.UniqueConstraint("tenant_id", "domain", name=op.f("uq_team_domains_tenant_id_domain")),
    )
    op.create_index(
        "uq_team_domains_verified_domain",
        "team_domains",
        ["domain"],
        unique=True,
        postgresql_where=sa.text("verified_at IS NOT NULL"),
        sqlite_where=sa.text("verified_at IS NOT NULL"),
    )


def _join_requests() -> None:
    op.create_table(
        "join_requests",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        _role_column("role"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('approved', 'declined')", name=op.f("ck_join_requests_outcome_known")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.id"], name=op.f("fk_join_requests_decided_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_join_requests_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_join_requests_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_requests")),
    )
    op.create_index("ix_join_requests_tenant_id_created_at", "join_requests", ["tenant_id", "created_at"])
    op.create_index("ix_join_requests_user_id", "join_requests", ["user_id"])
    op.create_index(
        "uq_join_requests_open",
        "join_requests",
        ["tenant_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("decided_at IS NULL"),
        sqlite_where=sa.text("decided_at IS NULL"),
    )


def _discovery_function() -> None:
    op.execute(
        f"""
        CREATE FUNCTION public.{FUNCTION}
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
                      SELECT 1 FROM public.tenant_members AS m WHERE m.tenant_id = t.id AND m.user_id = u.id
                  )
                ORDER BY t.name, t.id;
            PERFORM set_config('app.domain_discovery', '', true);
        END
        $$
        """
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS public.{FUNCTION}")
        for table in ("tenants", "tenant_members"):
            op.execute(f"DROP POLICY IF EXISTS domain_discovery ON {table}")
    op.drop_table("join_requests")
    op.drop_table("team_domains")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("allowed_email_domains")
