"""Voiding open invitations (revoked or replaced, their unsent mail cancelled), and revoking what an
inviter who left or got a lower role can no longer grant.

It sits below the invitations package and services/departures.py on purpose: a membership's removal
revokes the invitations its member sent, and accepting an invitation may first end the accepter's
ended membership (services/endings.py), so both reach this without an import cycle.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from nyxcore.extensions import db
from nyxcore.models import Invitation
from nyxcore.roles import TenantRole, grantable_roles
from nyxcore.services import audit, mail

INVITER_LOST_ROLE = "inviter_lost_role"  # revoked_reason: its inviter may no longer grant its role


def void(invitation: Invitation, reason: str, why: str) -> None:
    """Mark an open invitation revoked for `reason`; its unsent email is cancelled (`why`: in words)."""
    invitation.revoked_at = datetime.now(UTC)
    invitation.revoked_reason = reason
    if invitation.outbox_email_id is not None:
        mail.cancel_unsent(invitation.outbox_email_id, f"Not sent: {why} before delivery.")
    db.session.flush()  # frees uq_invitations_open_email for a new invitation to the same address


def record_revoked(tenant_id: uuid.UUID, by: uuid.UUID | None, invitation: Invitation, **details: str) -> None:
    """Audit log a revocation as `by`'s doing; None: the system's (the audit page says "NyxCore")."""
    if by is None:
        details["by"] = "system"
    audit.record(tenant_id, by, "invitation.revoked", target=invitation.email, role=invitation.role.value, **details)


def revoke_ungrantable(
    tenant_id: uuid.UUID, by: uuid.UUID | None, inviter_id: uuid.UUID, inviter_role: TenantRole | None
) -> list[Invitation]:
    """Revoke the open invitations `inviter_id` sent in team `tenant_id` that `inviter_role` cannot grant.

    Call after a member was removed (`inviter_role` None) or given a lower role, once that change is
    flushed. Unsent mail is cancelled; each revocation is audit logged as `by`'s doing (None: the system).
    """
    lost = db.session.scalars(
        select(Invitation)
        .where(
            Invitation.tenant_id == tenant_id,
            Invitation.invited_by == inviter_id,
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.role.not_in(grantable_roles(inviter_role)),
        )
        .order_by(Invitation.created_at, Invitation.id)
        .with_for_update()
    ).all()
    for invitation in lost:
        void(invitation, INVITER_LOST_ROLE, "the inviter can no longer grant its role")
        record_revoked(tenant_id, by, invitation, reason=INVITER_LOST_ROLE)
    return list(lost)
