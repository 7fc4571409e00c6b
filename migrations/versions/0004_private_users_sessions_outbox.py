"""Defence in depth: private users, server-side sessions, outbox scoped by team, immutable tenant ids.

What an attack session found the app role could do with no or partial tenant context, and what
this migration does about it:

- `SELECT email, name, password_hash FROM users` returned every user and `UPDATE users` worked.
  Now `users` has row-level security: the app role sees the acting user (`app.user_id`), the
  members of the active team, and the inviter of an invitation whose token is presented; it may
  insert and change only its own row. It has no SELECT on `password_hash` at all (column
  privileges). Log in asks two SECURITY DEFINER functions instead: `nyxcore_password_setting(email)`
  gives the hash's parameters and salt (never the digest), and `nyxcore_login(email, candidate)`
  answers the user id when the caller computed the same hash, that is, proved the password.
  `users` is not FORCEd: its owner (the migration role, which could change the policies anyway) is
  what the two functions run as.
- `outbox_emails` showed every team's recipients and subjects. It gains `tenant_id` (the team a
  message was sent for; backfilled from invitations) and forced RLS: a team sees its own messages
  (delivery state), a worker sees only the message named by `app.outbox_id`, and the beat sweep and
  key rotation list unsent ids through SECURITY DEFINER functions that return ids and counts only.
- With only `app.invite_token_hash` set, one UPDATE made an invitation an owner's for ten years in
  another team. The token holder may still mark the invitation accepted by themselves, and a
  trigger refuses any other change on that path; and no row of a tenant table may ever change its
  `tenant_id` (a trigger on each).
- `user_sessions`: a signed-in browser, so that log out ends a session on the server (forced RLS:
  a user sees their own sessions only).

On SQLite (development) only the table and columns are made; there is no RLS.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore import rls
from nyxcore.dbroles import quote_role, restrict_private_columns

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_TABLES = ("tenant_members", "invitations", "github_tokens", "audit_events", "notes", "outbox_emails")
FUNCTIONS = (
    "nyxcore_password_setting(text)",
    "nyxcore_login(text, text)",
    "nyxcore_unsent_outbox(timestamp with time zone, integer, integer)",
    "nyxcore_stale_outbox(text, uuid, integer)",
    "nyxcore_count_unsent_outbox(text)",
)
OUTBOX_SCAN_ON = "PERFORM set_config('app.outbox_scan', 'on', true);"
OUTBOX_SCAN_OFF = "PERFORM set_config('app.outbox_scan', '', true);"


def upgrade() -> None:
    op.create_table(
        "user_sessions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("ip_address", sa.String(length=45), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_sessions_token_hash")),
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_user_sessions_user_id", ["user_id"], unique=False)
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_emails_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_outbox_emails_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)

    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    app_role = current_app.config["NYXCORE_APP_ROLE"]
    quoted_app = quote_role(app_role)
    if bind.exec_driver_sql("SELECT current_user").scalar_one() == app_role:
        raise RuntimeError("Run migrations as the owner role (MIGRATION_DATABASE_URL), not as the app role.")

    # Before RLS hides them from the owner: the team each queued invitation mail was sent for.
    op.execute(
        "UPDATE outbox_emails AS o SET tenant_id = i.tenant_id FROM invitations AS i "
        "WHERE i.outbox_email_id = o.id"
    )
    _private_users(quoted_app)
    _sessions()
    _outbox()
    _invitation_token_holder()
    op.execute(rls.KEEP_TENANT_ID_FUNCTION)
    for table in TENANT_TABLES:
        op.execute(rls.keep_tenant_id_trigger(table))
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION public.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION public.{signature} TO {quoted_app}")
    restrict_private_columns(bind, app_role)


def _private_users(app_role: str) -> None:
    op.execute("ALTER TABLE users ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY own_account ON users USING (id = {rls.USER}) WITH CHECK (id = {rls.USER})")
    op.execute(
        "CREATE POLICY team_members ON users FOR SELECT USING ("
        f"id IN (SELECT m.user_id FROM public.tenant_members AS m WHERE m.tenant_id = {rls.TENANT}))"
    )
    op.execute(
        "CREATE POLICY inviter_by_token ON users FOR SELECT USING ("
        f"id IN (SELECT i.invited_by FROM public.invitations AS i WHERE i.token_hash = {rls.INVITE}))"
    )
    # The stored hash less its digest: "$argon2id$v=19$m=...,t=...,p=...$<salt>". Enough to compute a
    # candidate hash from a password, useless for guessing one offline.
    op.execute(
        """
        CREATE FUNCTION public.nyxcore_password_setting(login_email text)
        RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT left(u.password_hash, length(u.password_hash) - strpos(reverse(u.password_hash), '$'))
            FROM public.users AS u WHERE u.email = lower(login_email)
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION public.nyxcore_login(login_email text, candidate_hash text)
        RETURNS uuid
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT u.id FROM public.users AS u
            WHERE u.email = lower(login_email) AND u.password_hash = candidate_hash
        $$
        """
    )


def _sessions() -> None:
    op.execute("ALTER TABLE user_sessions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE user_sessions FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY own_sessions ON user_sessions USING (user_id = {rls.USER}) WITH CHECK (user_id = {rls.USER})"
    )


def _outbox() -> None:
    op.execute("ALTER TABLE outbox_emails ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE outbox_emails FORCE ROW LEVEL SECURITY")
    op.execute(rls.tenant_isolation_policy("outbox_emails"))
    op.execute(
        f"CREATE POLICY delivery ON outbox_emails USING (id = {rls.OUTBOX}) WITH CHECK (id = {rls.OUTBOX})"
    )
    # As in 0003: the owner (these functions' definer) is held by FORCE too, and sees the unsent rows
    # only inside the functions below, which set and clear the switch around their one query.
    op.execute(
        "CREATE POLICY outbox_scan ON outbox_emails FOR SELECT TO CURRENT_USER "
        "USING (current_setting('app.outbox_scan', true) = 'on')"
    )
    op.execute(
        _outbox_ids_function(
            "nyxcore_unsent_outbox(cutoff timestamptz, max_attempts integer, max_rows integer)",
            "o.sent_at IS NULL AND o.created_at < cutoff AND o.attempts < max_attempts "
            "AND o.body_ciphertext IS NOT NULL ORDER BY o.created_at LIMIT max_rows",
        )
    )
    op.execute(
        _outbox_ids_function(
            "nyxcore_stale_outbox(primary_key_id text, after_id uuid, max_rows integer)",
            "o.sent_at IS NULL AND o.body_ciphertext IS NOT NULL AND o.key_id <> primary_key_id "
            "AND (after_id IS NULL OR o.id > after_id) ORDER BY o.id LIMIT max_rows",
        )
    )
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_count_unsent_outbox(primary_key_id text,
                                                          OUT under_primary bigint, OUT stale bigint)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            {OUTBOX_SCAN_ON}
            SELECT count(*) FILTER (WHERE o.key_id = primary_key_id),
                   count(*) FILTER (WHERE o.key_id <> primary_key_id)
            INTO under_primary, stale
            FROM public.outbox_emails AS o
            WHERE o.sent_at IS NULL AND o.body_ciphertext IS NOT NULL;
            {OUTBOX_SCAN_OFF}
        END
        $$
        """
    )


def _outbox_ids_function(signature: str, condition: str) -> str:
    """A SECURITY DEFINER function returning the ids of the outbox rows matching `condition`, nothing else."""
    return f"""
        CREATE FUNCTION public.{signature}
        RETURNS SETOF uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            {OUTBOX_SCAN_ON}
            RETURN QUERY SELECT o.id FROM public.outbox_emails AS o WHERE {condition};
            {OUTBOX_SCAN_OFF}
        END
        $$
        """


def _invitation_token_holder() -> None:
    # The UPDATE policy for token holders (0002) stays; on that path (the row is not of the
    # active team) the only change allowed is to mark an open invitation accepted by oneself.
    op.execute(
        f"""
        CREATE FUNCTION public.nyxcore_invitation_token_update()
        RETURNS trigger
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            -- row_security_active: only for roles held by RLS (the app role), not a superuser's repair.
            IF row_security_active(TG_RELID) AND OLD.tenant_id IS DISTINCT FROM {rls.TENANT} AND (
                OLD.consumed_at IS NOT NULL
                OR NEW.consumed_at IS NULL
                OR NEW.consumed_by IS DISTINCT FROM {rls.USER}
                OR (to_jsonb(NEW) - 'consumed_at' - 'consumed_by')
                   IS DISTINCT FROM (to_jsonb(OLD) - 'consumed_at' - 'consumed_by')
            ) THEN
                RAISE EXCEPTION 'an invitation token only lets its holder accept the invitation'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER token_holder_accepts_only BEFORE UPDATE ON invitations "
        "FOR EACH ROW EXECUTE FUNCTION public.nyxcore_invitation_token_update()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in TENANT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS keep_tenant_id ON {table}")
        op.execute("DROP TRIGGER IF EXISTS token_holder_accepts_only ON invitations")
        op.execute("DROP FUNCTION IF EXISTS public.nyxcore_invitation_token_update()")
        op.execute("DROP FUNCTION IF EXISTS public.nyxcore_keep_tenant_id()")
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
        for name in ("tenant_isolation", "delivery", "outbox_scan"):
            op.execute(f"DROP POLICY IF EXISTS {name} ON outbox_emails")
        op.execute("ALTER TABLE outbox_emails NO FORCE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE outbox_emails DISABLE ROW LEVEL SECURITY")
        for name in ("own_account", "team_members", "inviter_by_token"):
            op.execute(f"DROP POLICY IF EXISTS {name} ON users")
        op.execute("ALTER TABLE users DISABLE ROW LEVEL SECURITY")
        app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
        op.execute(f"GRANT SELECT, UPDATE ON users TO {app_role}")
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_emails_tenant_id_created_at")
        batch_op.drop_constraint(batch_op.f("fk_outbox_emails_tenant_id_tenants"), type_="foreignkey")
        batch_op.drop_column("tenant_id")
    op.drop_table("user_sessions")
