"""Account page: audit events keep the name their actor had, so a deleted account's doings stay readable.

`audit_events.actor_id` is ON DELETE SET NULL: once an account is deleted, its events would say
only "someone". `actor_name` is a snapshot of the actor's name taken when the event is recorded
(services/audit.py), backfilled here from the users that still exist.

Deleting one's own account needs no new privilege or policy: the app role holds DELETE on `users`
(0002's grants) and the `own_account` policy (0004) lets it delete only the acting user's row; the
rows that reference it go by their foreign keys (memberships and sessions CASCADE, authorship SET
NULL), which PostgreSQL runs past row-level security as referential actions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor_name", sa.String(length=120), nullable=True))
    backfill = (
        "UPDATE audit_events AS a SET actor_name = u.name FROM users AS u "
        "WHERE u.id = a.actor_id AND a.actor_name IS NULL"
    )
    if op.get_bind().dialect.name != "postgresql":
        op.execute(backfill)
        return
    # audit_events is FORCEd, so RLS hides every team's rows from the owner too. Lifted inside this
    # migration's transaction only: no other session ever sees the table without it.
    op.execute("ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY")
    op.execute(backfill)
    op.execute("ALTER TABLE audit_events FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("actor_name")
