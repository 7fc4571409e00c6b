"""An outbox message is claimed through one SECURITY INVOKER function with cached plans (issue 15).

The worker's claim (services/mail.py: lock an unsent row, mark it sent, wipe its body, return what it
held) was one `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING` statement, planned afresh
for every message with the `outbox_emails` policies expanded into it; PostgreSQL could also read it
through the partial index of unsent rows, filtering every unsent row by id. As a PL/pgSQL function its
two statements (the locking SELECT and the UPDATE, both by primary key) are planned once per connection,
which holds behind PgBouncer's transaction pooling too.

`nyxcore_claim_outbox(message, sent, max_attempts)` returns the row's attempts (before this one), address,
subject and sealed body, or no row when it was sent, given up on (`max_attempts`), cancelled, or another
worker holds it; the caller's transaction holds the lock until it commits (sent) or rolls back.

Isolation is unchanged: it is SECURITY INVOKER, so both statements run as the app role under the
`outbox_emails` policies (FORCEd): the worker sees and changes the one row its context names
(`delivery`: `app.outbox_id`) or rows of the team in its context (`tenant_isolation`), as before; the
`keep_tenant_id` trigger still guards the UPDATE. It reads nothing the caller could not read itself.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

CLAIM = "nyxcore_claim_outbox(uuid, timestamptz, integer)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    op.execute(
        """
        CREATE FUNCTION public.nyxcore_claim_outbox(message uuid, sent timestamptz, max_attempts integer)
        RETURNS TABLE (attempts integer, to_address text, subject text, key_id text, nonce bytea,
                       body_ciphertext bytea)
        LANGUAGE plpgsql VOLATILE SECURITY INVOKER ROWS 1
        AS $$
        #variable_conflict use_column
        DECLARE
            claimed record;
        BEGIN
            SELECT o.attempts, o.to_address::text AS to_address, o.subject::text AS subject,
                   o.key_id::text AS key_id, o.nonce, o.body_ciphertext
            INTO claimed
            FROM public.outbox_emails AS o
            WHERE o.id = message AND o.sent_at IS NULL AND o.body_ciphertext IS NOT NULL
              AND o.nonce IS NOT NULL AND o.key_id IS NOT NULL AND o.attempts < max_attempts
            FOR UPDATE SKIP LOCKED;  -- a worker holding it is sending it
            IF NOT FOUND THEN
                RETURN;
            END IF;
            UPDATE public.outbox_emails AS o
            SET attempts = o.attempts + 1, sent_at = sent, last_error = NULL, failure = NULL,
                retry_at = NULL, key_id = NULL, nonce = NULL, body_ciphertext = NULL
            WHERE o.id = message;
            attempts := claimed.attempts;
            to_address := claimed.to_address;
            subject := claimed.subject;
            key_id := claimed.key_id;
            nonce := claimed.nonce;
            body_ciphertext := claimed.body_ciphertext;
            RETURN NEXT;
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION public.{CLAIM} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{CLAIM} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS public.{CLAIM}")
