"""Invitation lifecycle: one reminder before expiry, and delivery failures stored as a kind.

- `invitations.reminded_at`: when the reminder 48 hours before expiry was claimed. The beat task
  claims it with `UPDATE ... WHERE reminded_at IS NULL ... RETURNING`, so of any number of beat or
  worker processes exactly one sends it.
- `outbox_emails.failure` (a small enum: services/mail_failures.py) and `retry_at`: why the last
  attempt failed and when the next one is due, in place of the exception text the pending list
  used to show.
- The reminder task finds due invitations across teams through `nyxcore_invitations_due_reminder`,
  a SECURITY DEFINER function that returns ids only (as the outbox sweep does), read under an
  owner-only policy switched on inside the function.

On SQLite (development) only the columns and the index are made.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DUE_FUNCTION = "nyxcore_invitations_due_reminder(interval, integer)"
OPEN_UNREMINDED = "consumed_at IS NULL AND revoked_at IS NULL AND reminded_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_invitations_reminder_due",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text(OPEN_UNREMINDED),
            sqlite_where=sa.text(OPEN_UNREMINDED),
        )
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    _legacy_errors_to_kinds()
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    quoted_app = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    op.execute(
        "CREATE POLICY reminder_scan ON invitations FOR SELECT TO CURRENT_USER "
        "USING (current_setting('app.invitation_scan', true) = 'on')"
    )
    op.execute(
        """
        CREATE FUNCTION public.nyxcore_invitations_due_reminder(lead interval, max_rows integer)
        RETURNS TABLE (invitation_id uuid, tenant_id uuid, invited_by uuid)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            PERFORM set_config('app.invitation_scan', 'on', true);
            RETURN QUERY
                SELECT i.id, i.tenant_id, i.invited_by FROM public.invitations AS i
                WHERE i.consumed_at IS NULL AND i.revoked_at IS NULL AND i.reminded_at IS NULL
                  AND i.invited_by IS NOT NULL
                  AND i.expires_at > now() AND i.expires_at <= now() + lead
                  AND i.expires_at - i.created_at > lead
                ORDER BY i.expires_at LIMIT max_rows;
            PERFORM set_config('app.invitation_scan', '', true);
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION public.{DUE_FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{DUE_FUNCTION} TO {quoted_app}")


def _legacy_errors_to_kinds() -> None:
    """Exception texts stored before this revision become kinds; our own words (cancellations) stay."""
    kinds = (
        ("unreadable", "last_error LIKE 'cannot decrypt%'"),
        ("deferred", "last_error LIKE 'SMTP 4%'"),
        (
            "address_refused",
            "(last_error LIKE 'SMTP 550%' OR last_error LIKE 'SMTP 551%' OR last_error LIKE 'SMTP 553%' "
            "OR last_error = 'the mail server refused the recipient')",
        ),
        ("rejected", "last_error LIKE 'SMTP 5%'"),
        ("unreachable", "(last_error LIKE '%Connection%' OR last_error LIKE '%Timeout%' OR last_error LIKE 'OSError%')"),
        ("unknown", "TRUE"),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:  # the owner is held by the forced policies too: lift them for this one backfill
        op.execute("ALTER TABLE outbox_emails NO FORCE ROW LEVEL SECURITY")
    for kind, condition in kinds:
        op.execute(
            f"UPDATE outbox_emails SET failure = '{kind}', last_error = NULL "
            f"WHERE last_error IS NOT NULL AND last_error NOT LIKE 'Not sent:%' AND failure IS NULL AND {condition}"
        )
    if postgresql:
        op.execute("ALTER TABLE outbox_emails FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS public.{DUE_FUNCTION}")
        op.execute("DROP POLICY IF EXISTS reminder_scan ON invitations")
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("failure")
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_index("ix_invitations_reminder_due")
        batch_op.drop_column("reminded_at")
