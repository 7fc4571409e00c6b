"""Account tokens: password reset, e-mail verification and e-mail change links; verified addresses.

- `users.email_verified_at`: when the address was proved. Accounts that exist when this migration
  runs are marked verified at that moment: they were made before verification existed, and many
  have proved their address by accepting an invitation. New accounts start unverified.
- `account_tokens`: one row per link, only the token's SHA-256 kept, single use (`used_at`), with
  an expiry. Forced row-level security: a user sees and writes their own tokens (`app.user_id`); a
  link's holder sees the one row whose hash they present (`app.account_token_hash`) and nothing
  else; the holder then acts as that row's user to use it.
- A password reset is asked for anonymously, and the app role cannot see other accounts:
  `nyxcore_issue_password_reset(email, token_hash, expires_at)` (SECURITY DEFINER, search_path
  pinned, EXECUTE for the app role only) issues the token and returns the account's id, or NULL for
  an unknown address or one that already has RESETS_PER_HOUR unexpired tokens issued in the last
  hour (a silent per-address limit: the caller answers the same either way).
- Account mail (no team: reset, verification, notices) is written to the outbox with a NULL
  `tenant_id`: an INSERT-only policy lets the app role add such a row without reading any.

On SQLite (development) only the column and the table are made; there is no RLS.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role, restrict_private_columns

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RESETS_PER_HOUR = 3
ISSUE_FUNCTION = "nyxcore_issue_password_reset(text, text, timestamp with time zone)"
ISSUE_ON = "PERFORM set_config('app.account_token_issue', 'on', true);"
ISSUE_OFF = "PERFORM set_config('app.account_token_issue', '', true);"


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET email_verified_at = CURRENT_TIMESTAMP WHERE email_verified_at IS NULL")
    op.create_table(
        "account_tokens",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('reset_password', 'verify_email', 'change_email')",
            name=op.f("ck_account_tokens_purpose_known"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_account_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_tokens_token_hash")),
    )
    op.create_index("ix_account_tokens_user_id_purpose", "account_tokens", ["user_id", "purpose"])

    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")
    _token_policies()
    _issue_function()
    op.execute(f"REVOKE ALL ON FUNCTION public.{ISSUE_FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{ISSUE_FUNCTION} TO {quote_role(app_role)}")
    # Account mail has no team: the app role may add it, and (as for every row) read none of it.
    op.execute("CREATE POLICY account_mail ON outbox_emails FOR INSERT WITH CHECK (tenant_id IS NULL)")
    restrict_private_columns(bind, app_role)  # users gained a column: the column grants are rebuilt


def _token_policies() -> None:
    op.execute("ALTER TABLE account_tokens ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE account_tokens FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY own_tokens ON account_tokens USING (user_id = {rls.USER}) WITH CHECK (user_id = {rls.USER})"
    )
    op.execute(f"CREATE POLICY token_by_hash ON account_tokens FOR SELECT USING (token_hash = {rls.ACCOUNT_TOKEN})")
    # The owner (the issuing function's definer) is held by FORCE too: it sees and adds tokens only
    # inside that function, which sets and clears the switch around its statements.
    op.execute(
        "CREATE POLICY account_token_issue ON account_tokens TO CURRENT_USER "
        "USING (current_setting('app.account_token_issue', true) = 'on') "
        "WITH CHECK (current_setting('app.account_token_issue', true) = 'on')"
    )


def _issue_function() -> None:
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_issue_password_reset(reset_email text, new_token_hash text,
                                                            expires timestamptz)
        RETURNS uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            account uuid;
            recent bigint;
        BEGIN
            -- Locked, so concurrent requests for one address count each other's tokens.
            SELECT u.id INTO account FROM public.users AS u WHERE u.email = lower(reset_email) FOR UPDATE;
            IF account IS NULL THEN
                RETURN NULL;
            END IF;
            {ISSUE_ON}
            SELECT count(*) INTO recent FROM public.account_tokens AS t
            WHERE t.user_id = account AND t.purpose = 'reset_password'
              AND t.created_at > now() - interval '1 hour' AND t.expires_at > now();
            IF recent >= {RESETS_PER_HOUR} THEN
                {ISSUE_OFF}
                RETURN NULL;
            END IF;
            INSERT INTO public.account_tokens (id, user_id, purpose, token_hash, created_at, expires_at)
            VALUES (gen_random_uuid(), account, 'reset_password', new_token_hash, now(), expires);
            {ISSUE_OFF}
            RETURN account;
        END
        $$
        """
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP POLICY IF EXISTS account_mail ON outbox_emails")
        op.execute(f"DROP FUNCTION IF EXISTS public.{ISSUE_FUNCTION}")
    op.drop_table("account_tokens")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_verified_at")
    if bind.dialect.name == "postgresql":
        restrict_private_columns(bind, current_app.config["NYXCORE_APP_ROLE"])
