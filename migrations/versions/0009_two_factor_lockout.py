"""Two-factor lockout: wrong codes count per account for 15 minutes, not per log in.

The count of wrong codes was reset by every correct password, so someone who knew the password got
five guesses per log in, without end. `last_failed_at` dates the last wrong code; the count starts
again only when it is older than the lockout window (services/two_factor.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_two_factor", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_two_factor", schema=None) as batch_op:
        batch_op.drop_column("last_failed_at")
