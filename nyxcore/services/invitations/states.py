"""An invitation's state, read from its own columns, and the clock it is read with."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from nyxcore.models import Invitation
from nyxcore.services.voiding import INVITER_LOST_ROLE as INVITER_LOST_ROLE  # a revoked_reason

RESENT = "resent"  # revoked_reason of an invitation replaced by a newer one
REVOKED = "revoked"


class InvitationState(StrEnum):
    OPEN = "open"
    USED = "used"
    REVOKED = "revoked"
    REPLACED = "replaced"
    EXPIRED = "expired"
    INVITER_LOST_ROLE = "inviter_lost_role"  # revoked for that reason, or its inviter can no longer grant it


_REVOKED_STATES = {RESENT: InvitationState.REPLACED, INVITER_LOST_ROLE: InvitationState.INVITER_LOST_ROLE}


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """`moment` with its zone: SQLite (development) gives timestamps back without it; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def is_expired(invitation: Invitation) -> bool:
    return aware(invitation.expires_at) <= now()


def state_of(invitation: Invitation) -> InvitationState:
    """The invitation's state from its own columns (whether its inviter may still grant it is not read)."""
    if invitation.consumed_at is not None:
        return InvitationState.USED
    if invitation.revoked_at is not None:
        return _REVOKED_STATES.get(invitation.revoked_reason or "", InvitationState.REVOKED)
    if is_expired(invitation):
        return InvitationState.EXPIRED
    return InvitationState.OPEN
