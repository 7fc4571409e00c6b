"""Memberships that end: an end date per membership, its warning, and the notice of a lost team.

- `tenant_members.ends_at` (the membership is gone for every request from then on) and
  `end_warned_at` (the warning mail was claimed, once), with a partial index for the beat tasks.
- `membership_notices`: why someone lost a team (removed, ended, left), written in the transaction
  that removed them and taken once by their next request. A tenant table (forced RLS, the isolation
  policy, the tenant_id guard); its user may read and delete their own notices, in any team, and
  nothing more: the team writes them.
- The beat tasks find due memberships in every team through two SECURITY DEFINER functions that
  return ids only (as the outbox sweep does, migration 0004); each membership is then claimed and
  changed in its own team's context.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FUNCTIONS = (
    "nyxcore_memberships_to_warn(interval, integer)",
    "nyxcore_memberships_to_end(integer)",
)
DUE = {
    "nyxcore_memberships_to_warn(warn_before interval, max_rows integer)": (
        "m.ends_at IS NOT NULL AND m.end_warned_at IS NULL AND m.ends_at > now() "
        "AND m.ends_at <= now() + warn_before"
    ),
    "nyxcore_memberships_to_end(max_rows integer)": "m.ends_at IS NOT NULL AND m.ends_at <= now()",
}


def upgrade() -> None:
    with op.batch_alter_table("tenant_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("end_warned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_tenant_members_ends_at", ["ends_at"], unique=False, postgresql_where=sa.text("ends_at IS NOT NULL")
        )
    _notices_table()
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")
    for statement in rls.protect_tenant_table("membership_notices"):
        op.execute(statement)
    op.execute(f"CREATE POLICY own_notices ON membership_notices FOR SELECT USING (user_id = {rls.USER})")
    op.execute(f"CREATE POLICY take_own_notices ON membership_notices FOR DELETE USING (user_id = {rls.USER})")
    _due_functions(quote_role(app_role))


def _notices_table() -> None:
    op.create_table(
        "membership_notices",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("team_name", sa.String(length=80), nullable=False),
        sa.Column(
            "reason",
            sa.Enum("removed", "ended", "left", name="notice_reason", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_membership_notices_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_membership_notices_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_notices")),
        sa.UniqueConstraint("tenant_id", "user_id", name=op.f("uq_membership_notices_tenant_id_user_id")),
    )


def _due_functions(app_role: str) -> None:
    # As in 0004: the owner (these functions' definer) is held by FORCE too, and sees the due
    # memberships only inside the functions, which set and clear the switch around their one query.
    op.execute(
        "CREATE POLICY membership_end_scan ON tenant_members FOR SELECT TO CURRENT_USER "
        "USING (current_setting('app.membership_end_scan', true) = 'on')"
    )
    for signature, condition in DUE.items():
        op.execute(
            f"""
            CREATE FUNCTION public.{signature}
            RETURNS TABLE (tenant_id uuid, member_id uuid)
            LANGUAGE plpgsql VOLATILE SECURITY DEFINER
            SET search_path = pg_catalog, pg_temp
            AS $$
            BEGIN
                PERFORM set_config('app.membership_end_scan', 'on', true);
                RETURN QUERY SELECT m.tenant_id, m.id FROM public.tenant_members AS m
                    WHERE {condition} ORDER BY m.ends_at, m.id LIMIT max_rows;
                PERFORM set_config('app.membership_end_scan', '', true);
            END
            $$
            """
        )
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
        op.execute("DROP POLICY IF EXISTS membership_end_scan ON tenant_members")
    op.drop_table("membership_notices")
    with op.batch_alter_table("tenant_members", schema=None) as batch_op:
        batch_op.drop_index("ix_tenant_members_ends_at")
        batch_op.drop_column("end_warned_at")
        batch_op.drop_column("ends_at")
