"""The one reminder an invitation gets, 48 hours before it expires.

The beat task (tasks.remind_expiring_invitations) lists the due invitations of every team through
`nyxcore_invitations_due_reminder` (migration 0010: ids only), then calls `remind` for each in its
team's context, as the system (tasks._in_each_team). `remind` claims the reminder with one conditional
`UPDATE ... WHERE reminded_at IS NULL ... RETURNING`: of any number of beat or worker processes
running it at once, exactly one sends it, and a restart never sends it twice.

The raw token was never stored, so the reminder cannot carry the first link: it replaces the
invitation with one of the same expiry and a fresh link (the first link then says it was replaced,
and names the newer email), marked reminded so that it is not reminded again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, text, update

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.models import Invitation, Tenant, User
from nyxcore.services import audit, mail
from nyxcore.services.invitations.issuing import issue_invitation
from nyxcore.services.invitations.states import RESENT, aware, now

REMINDER_LEAD = timedelta(hours=48)


@dataclass(frozen=True)
class DueReminder:
    invitation_id: uuid.UUID
    tenant_id: uuid.UUID
    invited_by: uuid.UUID


def due_reminders(*, lead: timedelta = REMINDER_LEAD, limit: int = 500) -> list[DueReminder]:
    """Open, unreminded invitations of every team expiring within `lead` that were issued for longer."""
    if db.session.get_bind().dialect.name == "postgresql":
        rows = db.session.execute(
            text("SELECT * FROM nyxcore_invitations_due_reminder(:lead, :limit)"), {"lead": lead, "limit": limit}
        ).all()
        return [DueReminder(*(uuid.UUID(str(value)) for value in row)) for row in rows]
    moment = now()  # SQLite (development): no RLS, and interval arithmetic is easier here
    candidates = db.session.execute(
        select(Invitation.id, Invitation.tenant_id, Invitation.invited_by, Invitation.created_at, Invitation.expires_at)
        .where(
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.reminded_at.is_(None),
            Invitation.invited_by.is_not(None),
            Invitation.expires_at > moment,
            Invitation.expires_at <= moment + lead,
        )
        .order_by(Invitation.expires_at)
        .limit(limit)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    ).all()
    return [
        DueReminder(row.id, row.tenant_id, row.invited_by)
        for row in candidates
        if aware(row.expires_at) - aware(row.created_at) > lead and row.invited_by is not None
    ]


def remind(invitation_id: uuid.UUID) -> Invitation | None:
    """Claim the reminder of an open invitation of the active team and queue it (a fresh link, same expiry).

    The system's own action, run by the beat task in the invitation's team (the mail names the inviter). Returns the
    replacing invitation, or None when it was claimed elsewhere, accepted, revoked or expired meanwhile;
    then nothing changed. Flushes; the caller commits and then dispatches the mail.
    """
    claimed = db.session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.reminded_at.is_(None),
            Invitation.expires_at > func.now(),
        )
        .values(reminded_at=func.now(), revoked_at=func.now(), revoked_reason=RESENT)
        .returning(
            Invitation.tenant_id,
            Invitation.email,
            Invitation.role,
            Invitation.invited_by,
            Invitation.expires_at,
            Invitation.outbox_email_id,
        )
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if claimed is None or claimed.invited_by is None:
        return None
    inviter, tenant = db.session.get(User, claimed.invited_by), db.session.get(Tenant, claimed.tenant_id)
    if inviter is None or tenant is None:
        return None
    if claimed.outbox_email_id is not None:  # the first email, if still unsent, would carry a dead link
        mail.cancel_unsent(claimed.outbox_email_id, "Not sent: replaced by the reminder before delivery.")
    until = aware(claimed.expires_at)
    invitation = issue_invitation(inviter, tenant, claimed.email, claimed.role, reminding_until=until)
    audit.record(
        claimed.tenant_id, None, "invitation.reminded", target=claimed.email, role=claimed.role.value, by="system"
    )
    return invitation
