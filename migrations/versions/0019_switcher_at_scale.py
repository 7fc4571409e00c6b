"""A user in 500 teams pays for the teams a page shows, not for all of them (issue 15, "Flat with size").

- The `member_teams` policy on `tenants` is the same rule written as a per-row `EXISTS` on the
  `(tenant_id, user_id)` unique index: "a team the user is a member of". The `IN (sub-select)` form
  made PostgreSQL hash every membership of the user before it could show one team, on every
  signed-in page (the active team is read with the user); `EXISTS` checks the rows a statement reads.
- `ix_tenant_members_user_id` becomes `(user_id, joined_at, id)`: the team switcher's most recently
  joined teams are read from it in order, under a LIMIT, whatever the number of the user's teams.
  The old index was its prefix, so nothing that used it loses an index.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from alembic import op

from nyxcore import rls

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tenant_members_user_id_joined_at", "tenant_members", ["user_id", "joined_at", "id"])
    op.drop_index("ix_tenant_members_user_id", table_name="tenant_members")
    if op.get_bind().dialect.name == "postgresql":
        _member_teams_policy(
            f"EXISTS (SELECT 1 FROM public.tenant_members AS m WHERE m.tenant_id = tenants.id AND m.user_id = {rls.USER})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _member_teams_policy(f"id IN (SELECT m.tenant_id FROM tenant_members m WHERE m.user_id = {rls.USER})")
    op.create_index("ix_tenant_members_user_id", "tenant_members", ["user_id"])
    op.drop_index("ix_tenant_members_user_id_joined_at", table_name="tenant_members")


def _member_teams_policy(condition: str) -> None:
    op.execute("DROP POLICY IF EXISTS member_teams ON tenants")
    op.execute(f"CREATE POLICY member_teams ON tenants FOR SELECT USING ({condition})")
