"""Someone goes from a team: removed by an admin, left of their own accord, or their membership ended.

One way for all three (services/members.py, services/endings.py): the membership is deleted, the
audit log names who did it (None: the system, for the beat task), the person is told on their next
request (services/notices.py), and the open invitations they sent are revoked in the same name.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from nyxcore.extensions import db
from nyxcore.models import Tenant, TenantMember
from nyxcore.services import audit, notices, voiding


def remove(
    tenant: Tenant,
    member: TenantMember,
    *,
    by: uuid.UUID | None,
    action: str,
    reason: str,
    target: str | None,
    at: datetime | None = None,
    **details: Any,
) -> None:
    """Delete `member` from `tenant` and do what follows, in the caller's transaction.

    `by` is the acting user, or None for the system; `action` and `target` go to the audit log with
    the member's role and `details`; `reason` and `at` make the person's notice (notices.leave).
    """
    user_id, role = member.user_id, member.role
    db.session.delete(member)
    db.session.flush()
    if by is None:
        details["by"] = "system"
    audit.record(tenant.id, by, action, target=target, role=role.value, **details)
    notices.leave(tenant, user_id, reason, at=at)
    voiding.revoke_ungrantable(tenant.id, by, user_id, None)
