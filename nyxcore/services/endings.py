"""Memberships that end: an end date set by an admin, a warning mail before it, removal at it.

The end date is the membership's last day: it ends at the following midnight UTC (`ends_at`). From
that moment it is gone (`TenantMember.live_at`: no longer in the team, no longer a seat), whether or
not the beat task has run yet; joining again first ends it (`end_if_over`). The beat tasks
(tasks.py) find due memberships in every team (`due_for_warning`, `due_for_ending`: ids only) and
handle each in its own team's context:

- `warn` claims the warning with one `UPDATE ... WHERE end_warned_at IS NULL ... RETURNING` and
  queues the mail in the same transaction, so any number of beat or worker processes, restarted or
  running side by side, send it once;
- `end` locks the membership and removes it (services/departures.py: audit logged as the system's
  doing, with a notice for the person); a second process finds nothing left to remove.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app, render_template
from sqlalchemy import select, text, update
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.errors import InvalidInput, PermissionDenied
from nyxcore.extensions import db, keyring
from nyxcore.models import Tenant, TenantMember, User
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole, can_manage_role
from nyxcore.services import audit, departures, mail, mail_names, members, notices
from nyxcore.tenancy import Actor

SET_END = Operation("members.set_end", TenantRole.ADMIN)
WARN_BEFORE = timedelta(days=7)
LONGEST = timedelta(days=10 * 366)  # an end date further away is a typo, not a plan
BATCH = 500


def ends_at_for(last_day: date) -> datetime:
    """When a membership whose last day is `last_day` ends: the following midnight, UTC."""
    return datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=UTC)


def set_end_date(actor: Actor, member_id: uuid.UUID, last_day: date | None) -> TenantMember:
    """Give a member's membership a last day, or none (`last_day` None clears it).

    Admins and owners, for the members they manage; never an owner's membership, never their own,
    never a day in the past. A new date is warned about again. Raises PermissionDenied, InvalidInput.
    """
    SET_END.check(actor)
    member = members.get_member(member_id)
    if member.id == actor.member_id:
        raise InvalidInput("You cannot give your own membership an end date. To go, leave the team.")
    if not can_manage_role(actor.role, member.role, member.role):
        raise PermissionDenied(f"Your role cannot set an end date for someone with the {member.role.label} role.")
    if member.role is TenantRole.OWNER:
        raise InvalidInput("An owner's membership does not end. Make them an admin first.", field="ends_on")
    ends_at = _checked_end(last_day)
    if ends_at == member.ends_at:
        return member
    member.ends_at, member.end_warned_at = ends_at, None
    db.session.flush()
    if ends_at is None:
        audit.record(actor.tenant_id, actor.user_id, "member.end_cleared", target=member.user.email)
    else:
        ends_on = notices.last_day(ends_at)
        audit.record(actor.tenant_id, actor.user_id, "member.end_set", target=member.user.email, ends_on=ends_on)
    return member


def _checked_end(last_day: date | None) -> datetime | None:
    if last_day is None:
        return None
    today = datetime.now(UTC).date()
    if last_day < today:
        raise InvalidInput("The end date is in the past. Choose today or a later day.", field="ends_on")
    if last_day > today + LONGEST:
        raise InvalidInput("Choose an end date within the next ten years.", field="ends_on")
    return ends_at_for(last_day)


def due_for_warning(limit: int = BATCH) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(team id, membership id) of memberships ending within WARN_BEFORE whose member was not warned."""
    return _due("nyxcore_memberships_to_warn(:warn_before, :limit)", limit, warning=True)


def due_for_ending(limit: int = BATCH) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(team id, membership id) of memberships past their end, still to be removed."""
    return _due("nyxcore_memberships_to_end(:limit)", limit, warning=False)


def _due(function: str, limit: int, *, warning: bool) -> list[tuple[uuid.UUID, uuid.UUID]]:
    # Across every team: on PostgreSQL through a SECURITY DEFINER function returning ids only
    # (migration 0012); SQLite (development) has no row-level security to reach across.
    if db.session.get_bind().dialect.name == "postgresql":
        rows = db.session.execute(
            text(f"SELECT tenant_id, member_id FROM {function}"),  # noqa: S608 (a constant of this module)
            {"warn_before": WARN_BEFORE, "limit": limit},
        )
        return [(uuid.UUID(str(t)), uuid.UUID(str(m))) for t, m in rows]
    now = datetime.now(UTC)
    due = ~TenantMember.live_at(now)
    if warning:
        due = TenantMember.end_warned_at.is_(None) & (TenantMember.ends_at > now) & (
            TenantMember.ends_at <= now + WARN_BEFORE
        )
    query = select(TenantMember.tenant_id, TenantMember.id).where(due).order_by(TenantMember.ends_at).limit(limit)
    return [(t, m) for t, m in db.session.execute(query.execution_options(**{tenancy.ALL_TENANTS: True}))]


def warn(tenant_id: uuid.UUID, member_id: uuid.UUID) -> bool:
    """Claim the warning of one membership ending within WARN_BEFORE and mail its member (the outbox).

    Run by the beat task in the team's context. False when another process claimed it first, or the
    date changed meanwhile. The claim and the mail commit together, or neither does.
    """
    now = datetime.now(UTC)
    claimed = db.session.execute(
        update(TenantMember)
        .where(
            TenantMember.id == member_id,
            TenantMember.tenant_id == tenant_id,
            TenantMember.end_warned_at.is_(None),
            TenantMember.ends_at > now,
            TenantMember.ends_at <= now + WARN_BEFORE,
        )
        .values(end_warned_at=now)
        .returning(TenantMember.user_id, TenantMember.ends_at)
    ).first()
    if claimed is None:
        return False
    user, tenant = db.session.get(User, claimed.user_id), db.session.get(Tenant, tenant_id)
    if user is None or tenant is None:
        return False
    _queue_warning(user, tenant, claimed.ends_at)
    return True


def _queue_warning(user: User, tenant: Tenant, ends_at: datetime) -> None:
    team_name = mail_names.for_mail(tenant.name)
    context = {
        "name": mail_names.for_mail(user.name),
        "team_name": team_name,
        "last_day": notices.last_day(ends_at),
        "link": f"{current_app.config['PUBLIC_URL']}/team/",
    }
    subject = f"Your membership of {team_name} ends on {context['last_day']}"
    mail.queue_email(
        keyring.get(),
        tenant_id=tenant.id,
        to=user.email,
        subject=subject[:255],
        text_body=render_template("email/membership_ending.txt", subject=subject, **context),
        html_body=render_template("email/membership_ending.html", subject=subject, **context),
    )


def end(tenant_id: uuid.UUID, member_id: uuid.UUID) -> bool:
    """Remove one membership past its end (run by the beat task in the team's context).

    Audit logged as the system's doing, and so are the revocations of the open invitations the
    person sent (services/departures.py); they are told on their next request. False when it is
    gone already (another process) or has not ended.
    """
    member = db.session.scalar(
        select(TenantMember)
        .options(joinedload(TenantMember.user), joinedload(TenantMember.tenant))
        .where(
            TenantMember.id == member_id,
            TenantMember.tenant_id == tenant_id,
            ~TenantMember.live_at(datetime.now(UTC)),
            TenantMember.role != TenantRole.OWNER,  # never set for owners; a team keeps its owners
        )
        .with_for_update(of=TenantMember)
    )
    if member is None or member.ends_at is None:
        return False
    departures.remove(
        member.tenant,
        member,
        by=None,
        action="member.ended",
        reason=notices.ENDED,
        target=member.user.email,
        at=member.ends_at,
        ends_on=notices.last_day(member.ends_at),
    )
    return True


def end_if_over(tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """End `user_id`'s membership of the team now if its end date has passed and the beat task has
    not removed it yet, so that joining again is a fresh join. Run in the team's context."""
    ended = db.session.scalar(
        select(TenantMember.id).where(
            TenantMember.tenant_id == tenant_id,
            TenantMember.user_id == user_id,
            ~TenantMember.live_at(datetime.now(UTC)),
        )
    )
    if ended is not None:
        end(tenant_id, ended)
