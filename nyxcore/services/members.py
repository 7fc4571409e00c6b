"""Team members and settings: role changes, removal, leaving, ownership, deletion (the list: member_list.py).

A team always keeps at least one owner. Every change that could take away an owner first locks
the team's row (`SELECT ... FOR NO KEY UPDATE`), so two concurrent requests (two owners demoting
each other) are serialised and the second one sees the first one's result.

Whoever is removed, leaves or gets a lower role loses the open invitations they sent and can no
longer grant (voiding.revoke_ungrantable): a departing owner cannot leave an owner invitation
behind. Removing and leaving go through services/departures.py, as an ended membership does.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from nyxcore.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import Tenant, TenantMember, User
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole, can_manage_role
from nyxcore.services import audit, departures, notices, seats, voiding
from nyxcore.tenancy import Actor

VIEW = Operation("team.view", TenantRole.VIEWER)
MANAGE = Operation("members.manage", TenantRole.ADMIN)
LEAVE = Operation("team.leave", TenantRole.VIEWER, before_two_factor=True)  # a team may not hold you hostage
SETTINGS = Operation("team.settings", TenantRole.OWNER)
TRANSFER = Operation("team.transfer", TenantRole.OWNER)
DELETE = Operation("team.delete", TenantRole.OWNER)
LAST_OWNER = "A team needs at least one owner. Make someone else an owner first."


def get_member(member_id: uuid.UUID) -> TenantMember:
    """A member of the active team with their user; another team's, an ended or an unknown id raises NotFound."""
    member = db.session.scalar(
        select(TenantMember)
        .options(joinedload(TenantMember.user))
        .where(TenantMember.id == member_id, TenantMember.live_at(func.now()))
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
    voiding.revoke_ungrantable(actor.tenant_id, actor.user_id, member.user_id, new_role)
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
    departures.remove(
        actor.tenant, member, by=actor.user_id, action="member.removed", reason=notices.REMOVED, target=user.email
    )
    return user


def is_sole_owner(actor: Actor) -> bool:
    """Whether the actor is the team's only owner, who may not leave (no statement for other roles)."""
    return actor.role is TenantRole.OWNER and _owner_count() <= 1


def leave_team(actor: Actor) -> None:
    """The actor leaves the active team, revoking their open invitations; the last owner may not."""
    LEAVE.check(actor)
    if actor.role is TenantRole.OWNER:
        _ensure_other_owner_remains(actor.tenant_id, actor.membership)
    departures.remove(
        actor.tenant, actor.membership, by=actor.user_id, action="member.left", reason=notices.LEFT, target=None
    )


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
    voiding.revoke_ungrantable(actor.tenant_id, actor.user_id, actor.user_id, actor.role)
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
