"""Join links and seat limits.

- `join_links`: a shareable link to join a team with a role (member or viewer), up to a number of
  uses, until an expiry, optionally for some e-mail domains only. Only the token's SHA-256 is kept.
  Forced row-level security like every tenant table, and one reviewed exception: the request that
  presents a link's token sees that one row (`join_link_by_token`, on the same `app.invite_token_hash`
  setting a magic link's holder uses), which is how someone who is not a member yet finds the team
  the link is for; the join itself then runs in that team's context (blueprints/join_links.py).
- `tenants.seat_limit`: members plus open invitations may not exceed it (services/seats.py); NULL
  is unlimited.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from nyxcore import rls

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seat_limit", sa.Integer(), nullable=True))
        batch_op.create_check_constraint("ck_tenants_seat_limit_positive", "seat_limit > 0")
    op.create_table(
        "join_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "owner",
                "admin",
                "member",
                "viewer",
                name="tenant_role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("allowed_domains", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("uses >= 0 AND uses <= max_uses", name=op.f("ck_join_links_uses_within_max")),
        sa.CheckConstraint("role IN ('member', 'viewer')", name=op.f("ck_join_links_role_below_admin")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_join_links_created_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_join_links_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_join_links_token_hash")),
    )
    op.create_index("ix_join_links_tenant_id_created_at", "join_links", ["tenant_id", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in rls.protect_tenant_table("join_links"):
            op.execute(statement)
        op.execute(
            f"CREATE POLICY join_link_by_token ON join_links FOR SELECT USING (token_hash = {rls.INVITE})"
        )


def downgrade() -> None:
    op.drop_table("join_links")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint("ck_tenants_seat_limit_positive", type_="check")
        batch_op.drop_column("seat_limit")
