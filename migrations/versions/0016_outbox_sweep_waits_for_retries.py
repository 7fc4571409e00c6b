"""The outbox sweep leaves alone a message whose retry is scheduled.

`nyxcore_unsent_outbox` (migration 0004) listed every unsent message older than the cutoff, also
one whose failed delivery had a Celery retry scheduled (`outbox_emails.retry_at`, migration 0010).
Beat then started a second retry chain for it every minute, and the chains' attempts piled up
past `MAX_ATTEMPTS` (the soak saw 15 of 12). Now a message is swept only when no retry is due, or
its retry is overdue by the cutoff's age (the retry was lost with its worker). Same signature,
owner and grants (CREATE OR REPLACE keeps them).

On SQLite (development) there is no function: services/mail.py asks the same condition itself.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UNSENT = "o.sent_at IS NULL AND o.created_at < cutoff AND o.attempts < max_attempts AND o.body_ciphertext IS NOT NULL"
NO_RETRY_DUE = "(o.retry_at IS NULL OR o.retry_at < cutoff)"


def _unsent_outbox(condition: str) -> str:
    """`nyxcore_unsent_outbox` as migration 0004 made it, with `condition` as its filter."""
    return f"""
        CREATE OR REPLACE FUNCTION public.nyxcore_unsent_outbox(cutoff timestamptz, max_attempts integer,
                                                                max_rows integer)
        RETURNS SETOF uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            PERFORM set_config('app.outbox_scan', 'on', true);
            RETURN QUERY SELECT o.id FROM public.outbox_emails AS o
                WHERE {condition} ORDER BY o.created_at LIMIT max_rows;
            PERFORM set_config('app.outbox_scan', '', true);
        END
        $$
        """


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_unsent_outbox(f"{UNSENT} AND {NO_RETRY_DUE}"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_unsent_outbox(UNSENT))
