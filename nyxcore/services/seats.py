"""Seat limits: a team's members plus its open invitations may not pass its `seat_limit`.

Every way in calls `ensure_room` in the transaction that lets someone in: inviting (issuing), a
join link (join_links) and accepting an invitation (accepting). It locks the team's row first, so
concurrent requests are counted one after the other and never pass the limit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, func, select

from nyxcore.errors import Conflict, InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import Invitation, Tenant, TenantMember
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.tenancy import Actor

SETTINGS = Operation("team.seats", TenantRole.OWNER)
MAX_SEATS = 100_000


@dataclass(frozen=True)
class SeatUsage:
    """What the team page says about seats, from counts it already has."""

    members: int
    open_invitations: int
    limit: int | None
    capped: bool = False  # there are more members than `members` (the member list counts to a cap)

    @property
    def used(self) -> int:
        return self.members + self.open_invitations

    @staticmethod
    def shows_invitations(limit: int | None) -> bool:
        """Whether the line counts open invitations: only against a limit (else it is "N members")."""
        return limit is not None

    def __str__(self) -> str:
        more = "+" if self.capped else ""
        if not self.shows_invitations(self.limit):
            return f"{self.members:,}{more} member{'' if self.members == 1 and not more else 's'}"
        return f"Seats: {self.used:,}{more} of {self.limit:,} used"


def open_invitations(tenant_id: ColumnElement[Any] | uuid.UUID) -> ScalarSelect[int]:
    """How many of the team's invitations hold a seat: not accepted, not revoked, not expired."""
    return (
        select(func.count())
        .select_from(Invitation)
        .where(
            Invitation.tenant_id == tenant_id,
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > func.now(),
        )
        .scalar_subquery()
    )


def members(tenant_id: ColumnElement[Any] | uuid.UUID) -> ScalarSelect[int]:
    """How many of the team's members hold a seat: those whose membership has not ended."""
    return (
        select(func.count())
        .select_from(TenantMember)
        .where(TenantMember.tenant_id == tenant_id, TenantMember.live_at(func.now()))
        .scalar_subquery()
    )


def lock_team(tenant_id: uuid.UUID) -> Tenant:
    """Lock the team's row until the transaction ends, serialising changes to its members and every
    way in (so seats are counted one change at a time). Raises NotFound."""
    # NO KEY UPDATE still serialises these changes, but does not block the FOR KEY SHARE that a new
    # membership's foreign key takes: an accept holding the inviter's row (FOR SHARE) while it inserts
    # would otherwise deadlock with a removal of that inviter that holds the team. populate_existing:
    # the seat limit read is the one under the lock, not an earlier load of the row.
    tenant = db.session.scalar(
        select(Tenant)
        .where(Tenant.id == tenant_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if tenant is None:
        raise NotFound("This team no longer exists.")
    return tenant


def ensure_room(tenant_id: uuid.UUID, wanted: int = 1, *, accepting: bool = False, field: str | None = None) -> None:
    """Lock the team and raise Conflict if `wanted` more people would pass its seat limit.

    `accepting`: an invitation is being accepted. Its seat was counted while it was open, so only
    the members count: when a limit set later leaves fewer seats than open invitations, the first
    acceptances win and the rest are refused. Teams without a limit are locked all the same, so a
    limit set meanwhile is seen.
    """
    tenant = lock_team(tenant_id)
    if tenant.seat_limit is None:
        return
    taken, invited = db.session.execute(select(members(tenant_id), open_invitations(tenant_id))).one()
    used = taken if accepting else taken + invited
    if used + wanted <= tenant.seat_limit:
        return
    if accepting:
        raise Conflict(
            f"{tenant.name} has no free seat: all {tenant.seat_limit} are taken. "
            "Ask an admin of the team to free one or to raise the limit.",
            field=field,
        )
    left = max(tenant.seat_limit - used, 0)
    raise Conflict(
        f"This team has {tenant.seat_limit} seats and {used} are taken by members and open invitations, "
        f"so there is room for {left} more. Revoke invitations, remove members, or raise the limit in "
        "the team settings.",
        field=field,
    )


def set_limit(actor: Actor, limit: int | None) -> Tenant:
    """Set the actor's team's seat limit (None: unlimited); owners only, audit logged.

    Raises InvalidInput outside 1..MAX_SEATS, Conflict below the number of members (open
    invitations may exceed it: they are then refused at acceptance once the seats are taken).
    """
    SETTINGS.check(actor)
    if limit is not None and not 1 <= limit <= MAX_SEATS:
        raise InvalidInput(f"Enter a number of seats from 1 to {MAX_SEATS:,}, or leave it empty.", field="seat_limit")
    tenant = lock_team(actor.tenant_id)
    if limit is not None:
        taken = db.session.scalar(select(members(actor.tenant_id))) or 0
        if limit < taken:
            raise Conflict(
                f"The team has {taken} members, more than {limit} seats. Remove members first.",
                field="seat_limit",
            )
    old = tenant.seat_limit
    if old == limit:
        return tenant
    tenant.seat_limit = limit
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "team.seat_limit_changed", target=tenant.name, old=old, new=limit)
    return tenant
