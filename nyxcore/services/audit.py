"""The audit log: who did what, to whom, when, in a team; read back in words, filtered, page by page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal, select, tuple_

from nyxcore.extensions import db
from nyxcore.models import AuditEvent, TenantMember, User
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services.audit_words import Facts, describe
from nyxcore.tenancy import Actor

VIEW = Operation("audit.view", TenantRole.ADMIN)
PER_PAGE = 50
SYSTEM = "NyxCore"


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


@dataclass(frozen=True)
class EventFilter:
    """Which events to list: by one person, of one kind, in [since, until) (UTC), older than `before`."""

    person: uuid.UUID | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: uuid.UUID | None = None


@dataclass(frozen=True)
class EventLine:
    """An event as the log shows it: when, who (and a note on who), and what they did in words."""

    id: uuid.UUID
    at: datetime
    who: str
    who_note: str | None
    sentence: str


@dataclass(frozen=True)
class EventPage:
    lines: list[EventLine]
    older: uuid.UUID | None  # the `before` of the next page; None on the last one


def people(actor: Actor) -> list[tuple[uuid.UUID, str]]:
    """The team's members by name, for the "Person" filter."""
    rows = db.session.execute(
        select(User.id, User.name)
        .join(TenantMember, TenantMember.user_id == User.id)
        .where(TenantMember.tenant_id == actor.tenant_id)
        .order_by(User.name, User.id)
    ).all()
    return [(row.id, row.name) for row in rows]


def list_events(actor: Actor, wanted: EventFilter, *, per_page: int = PER_PAGE) -> EventPage:
    """A page of the team's events, newest first, in words (two statements: events, then names)."""
    VIEW.check(actor)
    rows = db.session.execute(_filtered(wanted).limit(per_page + 1)).all()
    more = len(rows) > per_page
    rows = rows[:per_page]
    names = _team_names(
        actor.tenant_id, {row.target.lower() for row in rows if row.target and "@" in row.target}
    )
    lines = [_line(row, names) for row in rows]
    return EventPage(lines, rows[-1].id if more else None)


def _filtered(wanted: EventFilter) -> Select[Any]:
    query = (
        select(
            AuditEvent.id,
            AuditEvent.at,
            AuditEvent.actor_id,
            AuditEvent.actor_name,
            AuditEvent.action,
            AuditEvent.target,
            AuditEvent.details,
            User.name,
        )
        .outerjoin(User, User.id == AuditEvent.actor_id)  # a team mate's current name (RLS shows no one else)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    )
    if wanted.person is not None:
        query = query.where(AuditEvent.actor_id == wanted.person)
    if wanted.kind is not None:
        query = query.where(AuditEvent.action == wanted.kind)
    if wanted.since is not None:
        query = query.where(AuditEvent.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(AuditEvent.at < wanted.until)
    if wanted.before is not None:  # keyset: after the last event of the previous page, however long the log
        cursor_at = select(AuditEvent.at).where(AuditEvent.id == wanted.before).scalar_subquery()
        query = query.where(
            AuditEvent.at <= cursor_at,  # lets the (tenant_id, at) index start at the cursor
            tuple_(AuditEvent.at, AuditEvent.id)
            < tuple_(cursor_at, literal(wanted.before, AuditEvent.id.type)),
        )
    return query


def _team_names(tenant_id: uuid.UUID, emails: set[str]) -> dict[str, str]:
    """The names of the team's members among `emails` (addresses are stored lower case)."""
    if not emails:
        return {}
    rows = db.session.execute(
        select(User.email, User.name)
        .join(TenantMember, TenantMember.user_id == User.id)
        .where(TenantMember.tenant_id == tenant_id, User.email.in_(sorted(emails)))
    ).all()
    return {row.email: row.name for row in rows}


def _line(row: Any, names: dict[str, str]) -> EventLine:
    details = row.details if isinstance(row.details, dict) else {}
    if row.name is not None:
        who, note = row.name, None
    elif row.actor_name:
        who, note = row.actor_name, "account deleted" if row.actor_id is None else "no longer in this team"
    elif row.actor_id is None:  # recorded by NyxCore itself: a beat task, an ending
        who, note = SYSTEM, "automatic"
    else:
        who, note = "Someone", "no longer here"
    sentence = describe(row.action, Facts(row.target or "", details, names))
    return EventLine(row.id, row.at, who, note, sentence)
