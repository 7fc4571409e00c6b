"""Telling someone, once, that they lost a team: removed by an admin, ended on its date, or left.

The notice is a row written in the transaction that took the membership away (so it exists exactly
when the removal does), one per person and team. The request that next finds its active team gone
takes it (`take`, authz.bind_request_actor) and shows it: a page with the team still active never
asks, so an ordinary page costs no statement for this.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, delete, select

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.models import MembershipNotice, Tenant, TenantMember

REMOVED, ENDED, LEFT = "removed", "ended", "left"


def leave(tenant: Tenant, user_id: uuid.UUID, reason: str, *, at: datetime | None = None) -> None:
    """Note for `user_id` why they lost `tenant` (replacing an older notice), in the caller's transaction.

    Run in the team's context: the team writes its notices; their person may only read and take them.
    """
    db.session.execute(
        delete(MembershipNotice).where(MembershipNotice.tenant_id == tenant.id, MembershipNotice.user_id == user_id)
    )
    db.session.add(
        MembershipNotice(
            tenant_id=tenant.id, user_id=user_id, team_name=tenant.name, reason=reason, at=at or _now()
        )
    )
    db.session.flush()


# Built once; they reach across teams on purpose (the user's own rows, under RLS as every statement).
_TAKE = (
    delete(MembershipNotice)
    .where(MembershipNotice.user_id == bindparam("user_id"), MembershipNotice.tenant_id == bindparam("tenant_id"))
    .returning(MembershipNotice.team_name, MembershipNotice.reason, MembershipNotice.at)
    .execution_options(**{tenancy.ALL_TENANTS: True})
)
_ENDED = (
    select(Tenant.name, TenantMember.ends_at)
    .join(Tenant, Tenant.id == TenantMember.tenant_id)
    .where(
        TenantMember.user_id == bindparam("user_id"),
        TenantMember.tenant_id == bindparam("tenant_id"),
        ~TenantMember.live_at(bindparam("now")),
    )
    .execution_options(**{tenancy.ALL_TENANTS: True})
)


def take(user_id: uuid.UUID, tenant_id: uuid.UUID) -> str | None:
    """The message for `user_id` about losing team `tenant_id`, once (the notice is used up); or None.

    A membership past its end date that the beat task has not removed yet is already gone for the
    request, and says so too. Run as the user (their own notices and memberships).
    """
    params = {"user_id": user_id, "tenant_id": tenant_id}
    ended = db.session.execute(_ENDED, {**params, "now": _now()}).first()
    # Used up either way: beside a membership that just ended, a notice is a stale one (an earlier
    # removal, before they were let in again) and says nothing true now.
    taken = db.session.execute(_TAKE, params).first()
    if ended is not None:
        return message(ended.name, ENDED, ended.ends_at)
    if taken is not None:
        return message(taken.team_name, taken.reason, taken.at)
    return None


def message(team_name: str, reason: str, at: datetime) -> str:
    """What the person is told: "You were removed from Nyx Ops.", "Your membership of ... ended on 31 Jan 2027."."""
    if reason == ENDED:
        return f"Your membership of {team_name} ended on {last_day(at)}."
    if reason == LEFT:
        return f"You left {team_name}."
    return f"You were removed from {team_name}."


def last_date(ends_at: datetime) -> date:
    """The last day of a membership that ends at `ends_at` (the midnight UTC after that day)."""
    return (_aware(ends_at) - timedelta(microseconds=1)).date()


def last_day(ends_at: datetime) -> str:
    """The last day of a membership that ends at `ends_at`, as people write it: "31 Jan 2027"."""
    day = last_date(ends_at)
    return f"{day.day} {day:%b %Y}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite (development) gives timestamps back without their zone; they are stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
