"""Deleting one's own account: the teams that stand in the way, the teams that go with it, the deletion.

A user's teams are other tenants, and only an entry point may enter a team's context, so the view
(blueprints/account.py) drives this team by team: for each of the user's memberships it enters that
team's context (`authz.acting_in`) and calls `standing` or `leave_or_delete_team` with the Actor it
is given there, then `delete_user` as the user alone. One transaction, so a refusal in any team
(the request rolls back) leaves every team and the account as they were. This keeps every rule of
teams (the last owner, the invitations a leaver sent, the audit log) in the services that already
hold them, rather than in a SECURITY DEFINER function that would bypass them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from nyxcore.errors import Conflict, InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import TenantMember, User
from nyxcore.roles import TenantRole
from nyxcore.services import accounts, members, seats
from nyxcore.tenancy import Actor


@dataclass(frozen=True)
class TeamStanding:
    """How the user stands in one of their teams: their role, and how many members and owners it has."""

    tenant_id: uuid.UUID
    name: str
    role: TenantRole
    members: int
    owners: int

    @property
    def only_member(self) -> bool:
        """The team is deleted with the account."""
        return self.members <= 1

    @property
    def blocks_deletion(self) -> bool:
        """The user is its last owner and others remain: someone else must become owner first."""
        return self.role is TenantRole.OWNER and self.owners <= 1 and self.members > 1


def standing(actor: Actor) -> TeamStanding:
    """The actor's standing in the active team (one query)."""
    total, owners = db.session.execute(
        select(func.count(), func.count().filter(TenantMember.role == TenantRole.OWNER))
        .select_from(TenantMember)
        .where(TenantMember.live_at(func.now()))
    ).one()
    return TeamStanding(actor.tenant_id, actor.tenant.name, actor.role, int(total), int(owners))


def refuse_while_blocked(standings: Sequence[TeamStanding]) -> None:
    """Raise Conflict naming the teams whose last owner the user is while others remain in them."""
    blocking = [s.name for s in standings if s.blocks_deletion]
    if blocking:
        raise Conflict(
            f"You are the last owner of {', '.join(blocking)}. Make someone else an owner there, "
            "or delete the team, then delete your account.",
            field="password",
        )


def confirm(user: User, *, email: str, password: str) -> None:
    """Raise InvalidInput unless the user typed their own address and proved their password."""
    if accounts.normalise_email(email) != user.email:
        raise InvalidInput("Type your e-mail address exactly as shown to confirm.", field="confirm_email")
    accounts.prove_password(user, password)


def leave_or_delete_team(actor: Actor) -> TeamStanding:
    """Take the actor out of the active team for their account's deletion, and say how it stood.

    Their team alone (they are its only member, so its owner) is deleted; any other they leave,
    which revokes the invitations they sent there. The team is locked first, so someone joining
    meanwhile is counted. Raises Conflict when they turn out to be the last owner of a team with
    other members.
    """
    seats.lock_team(actor.tenant_id)
    now = standing(actor)
    if now.only_member and actor.role is TenantRole.OWNER:
        members.delete_team(actor, confirm_name=now.name)
    else:
        members.leave_team(actor)
    db.session.flush()  # now, in this team's context: RLS accepts its audit rows only here
    return now


def delete_user(user: User) -> None:
    """Delete the user's row, run as that user (RLS: one's own row only); sessions go with it.

    Call after leave_or_delete_team in each of their teams. Their notes and audit events in teams
    that remain lose the link to them (SET NULL); the events keep the name (`actor_name`).
    """
    result = db.session.execute(delete(User).where(User.id == user.id))
    if not getattr(result, "rowcount", 0):
        raise NotFound("This account no longer exists.")
