"""Invitations that ended lately (accepted or revoked), for the admin's invitations page."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from nyxcore.extensions import db
from nyxcore.models import Invitation
from nyxcore.services.invitations.states import RESENT, now

CLOSED_SHOWN_FOR = timedelta(days=14)
CLOSED_SHOWN = 20


def list_closed(*, within: timedelta = CLOSED_SHOWN_FOR, limit: int = CLOSED_SHOWN) -> list[Invitation]:
    """The active team's invitations accepted or revoked within `within`, newest first.

    Replaced ones (resent, renewed, reminded) are left out: their successor is listed instead.
    """
    since = now() - within
    return list(
        db.session.scalars(
            select(Invitation)
            .options(joinedload(Invitation.inviter))
            .where(
                or_(
                    Invitation.consumed_at >= since,
                    (Invitation.revoked_at >= since)
                    & (Invitation.consumed_at.is_(None))
                    & (Invitation.revoked_reason.is_distinct_from(RESENT)),
                )
            )
            .order_by(Invitation.created_at.desc(), Invitation.id.desc())
            .limit(limit)
        )
    )
