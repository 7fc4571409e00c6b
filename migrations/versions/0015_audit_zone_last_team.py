"""A person's time zone and the team they were last in.

- `users.time_zone`: an IANA zone chosen on /account; the audit log (and any time shown) uses it,
  else the zone the browser reports, else UTC.
- `users.last_tenant_id`: the active team, written when it changes, so logging in again lands in the
  team one left (only while still a member of it). No foreign key: a deleted team's id never matches
  a membership, and deleting a team touches no user row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

from nyxcore.dbroles import restrict_private_columns

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_tenant_id", sa.Uuid(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # users is read column by column (password_hash is not): give the app role the new columns.
        restrict_private_columns(bind, current_app.config["NYXCORE_APP_ROLE"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("last_tenant_id")
        batch_op.drop_column("time_zone")
