"""Two-factor authentication: TOTP secrets, recovery codes, and a team setting that requires it.

- `user_two_factor`: a user's TOTP secret sealed with the key ring (associated data: the user id),
  whether the enrolment is confirmed (`enabled_at`), the last accepted time step (a code is never
  accepted twice) and the wrong codes of the pending log in. Forced row-level security: a user
  sees and writes their own row only (`app.user_id`).
- `recovery_codes`: the SHA-256 of each single-use recovery code, forced RLS, own rows only.
- `users.two_factor_enabled_at`: read with the user on every request, so a team's requirement
  costs no query; `tenants.require_two_factor`, off by default.
- Key rotation: `nyxcore_users_with_stale_two_factor(primary_key_id)` returns the ids of the users
  whose secret is sealed under another key, nothing else (SECURITY DEFINER, as in 0003, through an
  owner-only SELECT policy that holds while `app.key_rotation_scan` is 'on'); the CLI then
  re-seals each one as the app role in that user's context.

On SQLite (development) only the tables and columns are made; there is no RLS.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role, restrict_private_columns

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OWN_ROW_TABLES = {"user_two_factor": "own_two_factor", "recovery_codes": "own_recovery_codes"}
FUNCTIONS = ("nyxcore_users_with_stale_two_factor(text)",)


def upgrade() -> None:
    _tables()
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("two_factor_enabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("require_two_factor", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")
    for table, policy in OWN_ROW_TABLES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {policy} ON {table} USING (user_id = {rls.USER}) WITH CHECK (user_id = {rls.USER})")
    _key_rotation(quote_role(app_role))
    restrict_private_columns(bind, app_role)  # the new users column is readable; password_hash still not


def _tables() -> None:
    op.create_table(
        "user_two_factor",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_two_factor_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_two_factor")),
        sa.UniqueConstraint("user_id", name=op.f("uq_user_two_factor_user_id")),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_recovery_codes_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
        sa.UniqueConstraint("user_id", "code_hash", name=op.f("uq_recovery_codes_user_id_code_hash")),
    )


def _key_rotation(app_role: str) -> None:
    op.execute(
        "CREATE POLICY key_rotation_scan ON user_two_factor FOR SELECT TO CURRENT_USER "
        "USING (current_setting('app.key_rotation_scan', true) = 'on')"
    )
    op.execute(
        """
        CREATE FUNCTION public.nyxcore_users_with_stale_two_factor(primary_key_id text)
        RETURNS SETOF uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            PERFORM set_config('app.key_rotation_scan', 'on', true);
            RETURN QUERY
                SELECT t.user_id FROM public.user_two_factor AS t
                WHERE t.key_id <> primary_key_id
                ORDER BY t.user_id;
            PERFORM set_config('app.key_rotation_scan', '', true);
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
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("require_two_factor")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("two_factor_enabled_at")
    op.drop_table("recovery_codes")
    op.drop_table("user_two_factor")
