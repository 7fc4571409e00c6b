"""How many invitations a team may send an hour, and the inviter's and instance's daily allowances."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import ColumnElement, func, select

from nyxcore.errors import RateLimited
from nyxcore.extensions import db
from nyxcore.models import Invitation, Tenant
from nyxcore.services import quotas
from nyxcore.services.invitations.states import aware, now
from nyxcore.tenancy import Actor


def check_rate(tenant_id: uuid.UUID, wanted: int) -> None:
    """Refuse more than INVITATIONS_PER_TEAM_PER_HOUR invitations (addresses, resends included) an hour.

    Counted in the database rather than by Flask-Limiter, so that one request inviting 50 people
    counts 50. The team row is locked (FOR NO KEY UPDATE, which does not block inserts of the team's
    rows) so that two concurrent requests cannot both pass the count.
    """
    config = current_app.config
    if not config.get("RATELIMIT_ENABLED", True):
        return
    limit: int = config["INVITATIONS_PER_TEAM_PER_HOUR"]
    db.session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    used = (
        db.session.scalar(
            select(func.count()).select_from(Invitation).where(_this_hour())
        )
        or 0
    )
    if used + wanted > limit:
        left = max(limit - used, 0)
        raise RateLimited(
            f"This team may send {limit} invitations an hour and has {left} left now. "
            + _when_room_frees(limit, used, wanted),
            field="emails",
        )


def _this_hour() -> ColumnElement[bool]:
    """The team's invitations that count against this hour (a comparison SQLite, in development, can do too)."""
    return Invitation.created_at > now() - timedelta(hours=1)


def _when_room_frees(limit: int, used: int, wanted: int) -> str:
    """Say when the hour's window will have room for `wanted`: as the oldest of it age out of it."""
    if wanted > limit:
        return f"Invite at most {limit} people at once."
    # The window must lose (used + wanted - limit) invitations: the oldest of those sets the time.
    leaving = used + wanted - limit
    last_to_leave = db.session.scalar(
        select(Invitation.created_at)
        .where(_this_hour())
        .order_by(Invitation.created_at)
        .offset(leaving - 1)
        .limit(1)
    )
    if last_to_leave is None:  # they aged out while we counted: try again is true now
        return "Try again now."
    wait = aware(last_to_leave) + timedelta(hours=1) - now()
    minutes = max(1, -(-int(wait.total_seconds()) // 60))  # round up: never say a time too early
    unit = "minute" if minutes == 1 else "minutes"
    return f"Invite fewer people at once, or try again in {minutes} {unit}."


def spend_daily_allowances(actor: Actor, wanted: int) -> None:
    """Count `wanted` invitations against the inviter's and the instance's daily allowances (quotas.py).

    Called after the team's hourly check, so a refusal there spends nothing. Raises RateLimited.
    """
    quotas.spend(
        [
            (quotas.INVITATIONS_PER_USER, str(actor.user_id)),
            (quotas.INVITATIONS_PER_INSTANCE, quotas.INSTANCE),
        ],
        wanted,
        field_name="emails",
    )
