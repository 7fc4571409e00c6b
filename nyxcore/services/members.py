"""Team members and settings: listing, role changes, removal, leaving, ownership, deletion.

A team always keeps at least one owner. Every change that could take away an owner first locks
the team's row (`SELECT ... FOR NO KEY UPDATE`), so two concurrent requests (two owners demoting
each other) are serialised and the second one sees the first one's result.

Whoever is removed, leaves or gets a lower role loses the open invitations they sent and can no
longer grant (invitations.revoke_ungrantable): a departing owner cannot leave an owner invitation
behind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, bindparam, func, or_, select
from sqlalchemy.orm import aliased, joinedload

from nyxcore import tenancy
from nyxcore.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import Tenant, TenantMember, User
from nyxcore.pagination import Page, like_pattern
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole, can_manage_role
from nyxcore.services import audit, invitations, notices, seats
from nyxcore.tenancy import Actor

PER_PAGE = 50
VIEW = Operation("team.view", TenantRole.VIEWER)
MANAGE = Operation("members.manage", TenantRole.ADMIN)
LEAVE = Operation("team.leave", TenantRole.VIEWER, before_two_factor=True)  # a team may not hold you hostage
SETTINGS = Operation("team.settings", TenantRole.OWNER)
TRANSFER = Operation("team.transfer", TenantRole.OWNER)
DELETE = Operation("team.delete", TenantRole.OWNER)
LAST_OWNER = "A team needs at least one owner. Make someone else an owner first."


@dataclass(frozen=True)
class MemberRow:
    """One line of the member list: the columns the team page shows, not ORM objects (no hashes)."""

    id: uuid.UUID
    user_id: uuid.UUID
    role: TenantRole
    joined_at: datetime
    name: str
    email: str
    two_factor: bool
    inviter_name: str | None
    ends_at: datetime | None


@dataclass(frozen=True)
class MemberPage(Page[MemberRow]):
    """A page of members, and what the seat count needs, read by the same statement."""

    members: int = 0  # all the team's members, whatever the search
    open_invitations: int = 0  # invitations holding a seat (services/seats.py)


def _count_columns(in_team: Any, matches: Any, *, search: bool) -> list[Any]:
    """How many members match, then the seat count's parts: open invitations (and all the members)."""
    everyone = select(func.count()).select_from(TenantMember).where(in_team)
    counted = everyone.join(User, User.id == TenantMember.user_id).where(matches) if search else everyone
    columns = [counted.scalar_subquery(), seats.open_invitations(bindparam("tenant_id"))]
    return [*columns, everyone.scalar_subquery()] if search else columns


def _member_rows(*, search: bool) -> Select[Any]:
    """The member list's statement, built once per shape: every value is a parameter.

    The total is an uncorrelated sub-select (computed once, from the members alone unless searching),
    not `count(*) OVER ()`: a window would join and check every member's user row before the LIMIT,
    about 250 ms for a team of 50,000.
    """
    inviter = aliased(User)
    in_team = TenantMember.tenant_id == bindparam("tenant_id")
    matches = or_(
        func.lower(User.name).like(bindparam("pattern", type_=String), escape="\\"),
        User.email.like(bindparam("pattern", type_=String), escape="\\"),
    )
    counts = _count_columns(in_team, matches, search=search)
    query = (
        select(
            TenantMember.id,
            TenantMember.user_id,
            TenantMember.role,
            TenantMember.joined_at,
            User.name,
            User.email,
            User.two_factor_enabled_at.is_not(None),
            inviter.name,
            TenantMember.ends_at,
            *counts,
        )
        .join(User, User.id == TenantMember.user_id)
        .outerjoin(inviter, inviter.id == TenantMember.invited_by)
        .where(in_team)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    if search:
        query = query.where(matches)
    return (
        query.order_by(TenantMember.joined_at, TenantMember.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


_MEMBER_ROWS = {searching: _member_rows(search=searching) for searching in (False, True)}
# Past the last page no row carries the counts: they are asked alone.
_COUNTS = {
    searching: select(*_MEMBER_ROWS[searching].selected_columns[len(fields(MemberRow)) :]).execution_options(
        **{tenancy.ALL_TENANTS: True}
    )
    for searching in (False, True)
}


def list_members(actor: Actor, *, page: int, search: str = "", per_page: int = PER_PAGE) -> MemberPage:
    """A page of the actor's team's members in join order, how many match, and the seats, in one statement.

    The statement leaves the ORM's tenant scoping (built once, it carries no loader criteria) and
    filters by the actor's team itself; row-level security applies to it as to every statement.
    The order matches the (tenant_id, joined_at, id) index, so a page of a large team reads one page.
    """
    search = search.strip().lower()
    query = _MEMBER_ROWS[bool(search)]
    page = max(page, 1)
    params = {"tenant_id": actor.tenant_id, "pattern": like_pattern(search)}
    rows = db.session.execute(query, {**params, "limit": per_page, "offset": (page - 1) * per_page}).all()
    width = len(fields(MemberRow))
    if rows:
        counts = tuple(rows[0][width:])
    elif page > 1 or search:  # past the end, or nobody matches: no row carried the counts
        counts = tuple(db.session.execute(_COUNTS[bool(search)], params).one())
    else:
        counts = (0, 0, 0)
    total, invited = counts[0], counts[1]
    everyone = counts[2] if search else total
    items = [MemberRow(*row[:width]) for row in rows]
    return MemberPage(items, page, per_page, total, members=everyone, open_invitations=invited)


def get_member(member_id: uuid.UUID) -> TenantMember:
    """A member of the active team with their user; another team's or unknown id raises NotFound."""
    member = db.session.scalar(
        select(TenantMember).options(joinedload(TenantMember.user)).where(TenantMember.id == member_id)
    )
    if member is None:
        raise NotFound("There is no such member in this team.")
    return member


def _owner_count() -> int:
    return (
        db.session.scalar(
            select(func.count()).select_from(TenantMember).where(TenantMember.role == TenantRole.OWNER)
        )
        or 0
    )


def _ensure_other_owner_remains(tenant_id: uuid.UUID, member: TenantMember) -> None:
    """Lock the team and refuse if `member` is its last owner. Call before demoting or removing them."""
    seats.lock_team(tenant_id)
    db.session.refresh(member, ["role"])  # it may have changed while we waited for the lock
    if member.role is TenantRole.OWNER and _owner_count() <= 1:
        raise Conflict(LAST_OWNER)


def change_role(actor: Actor, member_id: uuid.UUID, new_role: TenantRole) -> TenantMember:
    """Give a member another role, within what the actor may manage. Raises PermissionDenied, Conflict.

    A lower role revokes the member's open invitations for roles it cannot grant.
    """
    MANAGE.check(actor)
    member = get_member(member_id)
    if not can_manage_role(actor.role, member.role, new_role):
        raise PermissionDenied(
            f"Your role cannot change a {member.role.label.lower()} into a {new_role.label.lower()}."
        )
    old_role = member.role
    if old_role is new_role:
        return member
    if old_role is TenantRole.OWNER:
        _ensure_other_owner_remains(actor.tenant_id, member)
    member.role = new_role
    if new_role is TenantRole.OWNER:  # an owner's membership does not end (services/endings.py)
        member.ends_at = member.end_warned_at = None
    db.session.flush()
    audit.record(
        actor.tenant_id,
        actor.user_id,
        "member.role_changed",
        target=member.user.email,
        old=old_role.value,
        new=new_role.value,
    )
    invitations.revoke_ungrantable(actor, member.user_id, new_role)
    return member


def removable(actor: Actor, member_id: uuid.UUID) -> TenantMember:
    """The member `actor` may remove (what the confirm page names). Raises NotFound, PermissionDenied, InvalidInput."""
    MANAGE.check(actor)
    member = get_member(member_id)
    if member.id == actor.member_id:
        raise InvalidInput("To remove yourself, leave the team.")
    if not can_manage_role(actor.role, member.role, member.role):
        raise PermissionDenied(f"Your role cannot remove a {member.role.label.lower()}.")
    return member


def remove_member(actor: Actor, member_id: uuid.UUID) -> User:
    """Remove someone (not yourself: use leave_team) from the team, revoking their open invitations.

    Raises PermissionDenied, Conflict.
    """
    member = removable(actor, member_id)
    if member.role is TenantRole.OWNER:
        _ensure_other_owner_remains(actor.tenant_id, member)
    user = member.user
    db.session.delete(member)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "member.removed", target=user.email, role=member.role.value)
    notices.leave(actor.tenant, member.user_id, notices.REMOVED)
    invitations.revoke_ungrantable(actor, member.user_id, None)
    return user


def is_sole_owner(actor: Actor) -> bool:
    """Whether the actor is the team's only owner, who may not leave (no statement for other roles)."""
    return actor.role is TenantRole.OWNER and _owner_count() <= 1


def sole_owner_on(page: MemberPage, actor: Actor, *, searched: bool) -> bool:
    """Whether `page` shows the actor is the only owner; no statement, so only when it lists everyone.

    On a page that does not (a search, a team of several pages) the Leave confirm page says it.
    """
    if actor.role is not TenantRole.OWNER or searched or page.pages > 1:
        return False
    return sum(m.role is TenantRole.OWNER for m in page.items) == 1


def leave_team(actor: Actor) -> None:
    """The actor leaves the active team, revoking their open invitations; the last owner may not."""
    LEAVE.check(actor)
    role = actor.role
    if role is TenantRole.OWNER:
        _ensure_other_owner_remains(actor.tenant_id, actor.membership)
    db.session.delete(actor.membership)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "member.left", target=None, role=role.value)
    notices.leave(actor.tenant, actor.user_id, notices.LEFT)
    invitations.revoke_ungrantable(actor, actor.user_id, None)


def transfer_ownership(actor: Actor, member_id: uuid.UUID) -> TenantMember:
    """Make another member the owner; the actor (an owner) becomes an admin and loses open invitations as admin or owner."""
    TRANSFER.check(actor)
    member = get_member(member_id)
    if member.id == actor.member_id:
        raise InvalidInput("Choose another member to transfer ownership to.", field="member_id")
    seats.lock_team(actor.tenant_id)
    member.role = TenantRole.OWNER
    actor.membership.role = TenantRole.ADMIN
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "team.ownership_transferred", target=member.user.email)
    invitations.revoke_ungrantable(actor, actor.user_id, actor.role)
    return member


def update_settings(actor: Actor, *, name: str) -> Tenant:
    """Rename the team (owners). Raises InvalidInput for an empty name."""
    SETTINGS.check(actor)
    name = name.strip()
    if not name:
        raise InvalidInput("Give the team a name.", field="name")
    tenant = seats.lock_team(actor.tenant_id)
    if tenant.name == name:
        return tenant
    changes = {"name": [tenant.name, name]}
    tenant.name = name
    audit.record(actor.tenant_id, actor.user_id, "team.settings_changed", target=tenant.name, **changes)
    return tenant


def delete_team(actor: Actor, *, confirm_name: str) -> str:
    """Delete the team and everything in it (owners), confirmed by typing its exact name."""
    DELETE.check(actor)
    tenant = seats.lock_team(actor.tenant_id)
    if confirm_name.strip() != tenant.name:
        raise InvalidInput("Type the team's name exactly to confirm.", field="confirm_name")
    name = tenant.name
    db.session.delete(tenant)
    db.session.flush()
    return name
