"""The team page's first open invitations as the member list's statement reads them (services/member_list.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from nyxcore.pagination import Page
from nyxcore.services.invitations.issuing import PendingInvitation, pending_row

_MOMENTS = ("expires_at", "reminded_at", "queued_at", "sent_at", "retry_at")


def pending_from_json(rows: list[dict[str, Any]], per_page: int) -> Page[PendingInvitation]:
    """`list_pending`'s first page from `nyxcore_pending_invitations`' rows as JSON objects: the member
    list reads them in its own statement on the team page, one round trip fewer."""
    items = []
    for row in rows:
        moments = {name: datetime.fromisoformat(row[name]) if row[name] else None for name in _MOMENTS}
        items.append(pending_row(SimpleNamespace(**{**row, **moments, "id": uuid.UUID(row["id"])})))
    return Page(items, 1, per_page, rows[0]["total"] if rows else 0)
