"""The seat count walks the team's first `cap` members instead of reading every member's index entry (issue 15).

`nyxcore_seat_counts` (0021) counts a team's live members up to a cap (COUNT_CAP + 1, "1,000+"), with the
generic plan forced. Inside a request the context names the user as well as the team, and the
`tenant_members` policies are `tenant_isolation OR own_memberships`: for that OR the generic plan chose a
BitmapOr of the two policies' indexes, and a bitmap is built in full before its first row is read, so the
LIMIT stopped nothing. A 50,000-member team's count read all 50,000 index entries (361 buffers; as the app
role in the team's context, 2.9 ms a call against 0.09 ms for a 50-member team), on every page of the
member list and every search: most of what the large team's team page cost over the small team's
(bench/size.py, "search, 1 character, full page" at 1.99 x).

The function now says `enable_bitmapscan = off`: its count is read by walking the `(tenant_id, joined_at,
id)` index from the team's first member and stops at the cap (1,001 entries: 24 buffers, about 0.5 ms for
that team). The statement, its result and its generic plan's other choices are unchanged.

Isolation is unchanged: the same SECURITY INVOKER function, run as the app role under the `tenant_members`
and `invitations` policies (FORCEd), filtering by the team the caller names; a setting of the planner's
changes which index is read, not which rows are visible.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from alembic import op
from flask import current_app

from nyxcore.dbroles import quote_role

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

SEAT_COUNTS = "nyxcore_seat_counts(uuid, integer)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    app_role = quote_role(current_app.config["NYXCORE_APP_ROLE"])
    op.execute(f"ALTER FUNCTION public.{SEAT_COUNTS} SET enable_bitmapscan = off")
    op.execute(f"REVOKE ALL ON FUNCTION public.{SEAT_COUNTS} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION public.{SEAT_COUNTS} TO {app_role}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION public.{SEAT_COUNTS} RESET enable_bitmapscan")  # 0021's function
