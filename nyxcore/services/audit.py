"""The audit log: who did what, to whom, when, in a team."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from nyxcore.extensions import db
from nyxcore.models import AuditEvent, User
from nyxcore.pagination import Page
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole

VIEW = Operation("audit.view", TenantRole.ADMIN)


def record(
    tenant_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    action: str,
    target: str | None = None,
    **details: Any,
) -> AuditEvent:
    """Add an audit event for `tenant_id`. Never put a secret in `details`.

    The actor's name is kept with the event, so it still says who once their account is deleted.
    The actor is nearly always the signed-in user, already loaded: no query.
    """
    actor = db.session.get(User, actor_id) if actor_id is not None else None
    event = AuditEvent(
        tenant_id=tenant_id,
        actor_id=actor_id,
        actor_name=actor.name if actor is not None else None,
        action=action,
        target=target,
        details=details,
    )
    db.session.add(event)
    return event


def list_events(*, page: int, per_page: int = 50) -> Page[AuditEvent]:
    """A page of the active team's events, newest first, with the actor loaded (2 queries)."""
    total = db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    events = db.session.scalars(
        select(AuditEvent)
        .options(joinedload(AuditEvent.actor))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return Page(list(events), page, per_page, total)
