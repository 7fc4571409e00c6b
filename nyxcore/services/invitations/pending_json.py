"""The team page's first open invitations as the member list's statement reads them (services/member_list.py):
the column that reads them, and what makes them a page again."""

from __future__ import annotations

import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnClause, ColumnElement, bindparam, case, column, func, literal, null, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from nyxcore.pagination import Page
from nyxcore.services.invitations.issuing import PendingInvitation, pending_row

_MOMENTS = ("expires_at", "reminded_at", "queued_at", "sent_at", "retry_at")
# nyxcore_pending_invitations' columns (migration 0021), as pending_from_json reads them.
_COLUMNS: list[ColumnClause[Any]] = [
    column(name)
    for name in (
        *("id", "email", "role", "inviter_name", "expires_at", "reminded_at", "queued", "queued_at"),
        *("sent_at", "attempts", "has_body", "failure", "last_error", "retry_at", "total"),
    )
]


def first_pending_column(on_this_row: ColumnElement[bool]) -> ColumnElement[Any]:
    """The team's first `pending_limit` open invitations as a JSON array, on the row `on_this_row` picks
    (the member list's first), when `pending_limit` > 0: they need no statement and no round trip of their
    own. The same SECURITY INVOKER function as invitations.list_pending, for the team `tenant_id` names.
    Elsewhere NULL, and not run (an InitPlan runs when a CASE first needs it)."""
    invited = (
        func.nyxcore_pending_invitations(bindparam("tenant_id"), bindparam("pending_limit"), literal(0))
        .table_valued(*_COLUMNS, with_ordinality="ord")
        .render_derived(name="p")
    )
    in_order = aggregate_order_by(invited.table_valued(), invited.c.ord)
    pending = select(func.coalesce(func.json_agg(in_order), "[]")).scalar_subquery()
    return case((on_this_row & (bindparam("pending_limit") > 0), pending), else_=null())


def pending_from_json(rows: list[dict[str, Any]], per_page: int) -> Page[PendingInvitation]:
    """`list_pending`'s first page from `nyxcore_pending_invitations`' rows as JSON objects: the member
    list reads them in its own statement on the team page, one round trip fewer."""
    items = []
    for row in rows:
        moments = {name: datetime.fromisoformat(row[name]) if row[name] else None for name in _MOMENTS}
        items.append(pending_row(SimpleNamespace(**{**row, **moments, "id": uuid.UUID(row["id"])})))
    return Page(items, 1, per_page, rows[0]["total"] if rows else 0)
