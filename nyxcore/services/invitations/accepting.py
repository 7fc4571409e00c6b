"""Following a magic link: where the visitor stands, and accepting.

Accepting is one conditional `UPDATE ... RETURNING` in the same transaction as the membership it
creates, so of any number of concurrent accepts of one link exactly one wins. An invitation whose
address already belongs to a member is not consumed: accepting it changes nothing and says so.

Both run as the link's holder in the invitation's team (authz.presenting_invitation sets that
context): the inviter's membership and the new member's row are that team's rows under RLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from nyxcore import tenancy
from nyxcore.errors import Gone, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import Invitation, TenantMember, User
from nyxcore.roles import grantable_roles
from nyxcore.services import accounts, audit, domain_policy, endings, seats, teams, verification
from nyxcore.services.invitations.display import (
    gone_message,
    inviter_lost_role_message,
    wrong_account_message,
)
from nyxcore.services.invitations.states import InvitationState, state_of
from nyxcore.services.invitations.tokens import find_by_token, hash_token


class Standing(StrEnum):
    """Where the visitor of a magic link stands."""

    SIGNED_OUT = "signed_out"
    WRONG_ACCOUNT = "wrong_account"
    ALREADY_MEMBER = "already_member"
    READY = "ready"


@dataclass(frozen=True)
class Acceptance:
    invitation: Invitation  # with tenant and inviter loaded
    standing: Standing


@dataclass(frozen=True)
class Accepted:
    membership: TenantMember  # with tenant set
    joined: bool  # False: they were a member already and nothing changed


class WrongAccount(PermissionDenied):
    """The signed-in user's address is not the one invited."""


class _NotConsumed(Exception):
    """The conditional UPDATE matched no row: someone else consumed the link, or it expired or was revoked."""


def _inviter_may_grant(invitation: Invitation, *, lock: bool) -> bool:
    """Is the invitation's inviter still a member of its team whose role may grant the invited role?

    Read in the invitation's team context (RLS shows a team's memberships only there). With `lock`
    the inviter's membership row is held FOR SHARE until the transaction ends, so a concurrent
    removal or demotion either waits for this accept or is seen by it. An invitation whose inviter
    deleted their account (`invited_by` NULL) grants nothing any more: nobody vouches for it.
    """
    if invitation.invited_by is None:
        return False
    query = select(TenantMember.role).where(
        TenantMember.tenant_id == invitation.tenant_id,
        TenantMember.user_id == invitation.invited_by,
        TenantMember.live_at(func.now()),
    )
    if lock:
        query = query.with_for_update(read=True)
    return invitation.role in grantable_roles(db.session.scalar(query))


def _addressed_to(invitation: Invitation, user: User) -> bool:
    return accounts.normalise_email(user.email) == accounts.normalise_email(invitation.email)


def acceptance(token: str, user: User | None, *, found: Invitation | None = None) -> Acceptance:
    """What the visitor of a magic link may do; changes nothing (mail scanners follow links).

    Raises NotFound (unknown token) or Gone (used, revoked, replaced, expired, or its inviter may no
    longer grant its role; the message says which), except that someone who already accepted it is told they are a member.
    `found`: the invitation this request already looked `token` up as (authz.presenting_invitation
    does, to enter its team), so as not to read it again (the ORM would hand back that same object).
    """
    invitation = found if found is not None and found.token_hash == hash_token(token) else find_by_token(token)
    state = state_of(invitation)
    if state is InvitationState.OPEN and not _inviter_may_grant(invitation, lock=False):
        state = InvitationState.INVITER_LOST_ROLE
    if state is not InvitationState.OPEN:
        # The one who accepted it (back button, second click) is told they are in, not that it is gone.
        if (
            user is not None
            and invitation.consumed_by == user.id
            and teams.membership_of(invitation.tenant_id, user.id)
        ):
            return Acceptance(invitation, Standing.ALREADY_MEMBER)
        raise Gone(gone_message(invitation, state))
    if user is None:
        return Acceptance(invitation, Standing.SIGNED_OUT)
    if not _addressed_to(invitation, user):
        return Acceptance(invitation, Standing.WRONG_ACCOUNT)
    if teams.membership_of(invitation.tenant_id, user.id) is not None:
        return Acceptance(invitation, Standing.ALREADY_MEMBER)
    return Acceptance(invitation, Standing.READY)


def accept(token: str, user: User, *, found: Invitation | None = None) -> Accepted:
    """Consume the invitation and make `user` a member of its team, atomically.

    Raises NotFound (unknown token), Gone (used, revoked, replaced, expired, its inviter may no
    longer grant its role; also for every loser of concurrent accepts), WrongAccount (the user's address is not the invited one).
    A user who is already a member gets their membership back with `joined=False`, and the
    invitation stays open.
    """
    result = acceptance(token, user, found=found)
    invitation = result.invitation
    if result.standing is Standing.WRONG_ACCOUNT:
        raise WrongAccount(wrong_account_message(invitation, user))
    if result.standing is Standing.ALREADY_MEMBER:
        return _already_member(invitation, user)
    domain_policy.check_address(invitation.tenant, user.email)  # the policy as it is now
    seats.ensure_room(invitation.tenant_id, accepting=True)  # locks the team first, as a removal does
    # Checked again in this transaction, under a lock, just before the consuming UPDATE: a removal
    # or demotion of the inviter cannot slip in between.
    if not _inviter_may_grant(invitation, lock=True):
        raise Gone(inviter_lost_role_message(invitation))
    endings.end_if_over(invitation.tenant_id, user.id)  # a membership that ended: this is a fresh join
    try:
        membership = _consume(invitation, user)
    except _NotConsumed:
        # A new statement, so it sees what the winner committed.
        db.session.refresh(invitation, ["consumed_at", "consumed_by", "revoked_at", "revoked_reason"])
        if invitation.consumed_by == user.id:
            return _already_member(invitation, user)
        raise Gone(gone_message(invitation, state_of(invitation))) from None
    except IntegrityError:  # uq_tenant_members_tenant_id_user_id: they joined in a concurrent request
        return _already_member(invitation, user)
    audit.record(
        invitation.tenant_id, user.id, "invitation.accepted", target=user.email, role=membership.role.value
    )
    verification.mark_verified(user)  # the link came to this address: it is proved
    return Accepted(membership, joined=True)


def _consume(invitation: Invitation, user: User) -> TenantMember:
    with db.session.begin_nested():
        row = db.session.execute(
            update(Invitation)
            .where(
                Invitation.token_hash == invitation.token_hash,
                Invitation.consumed_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > func.now(),
            )
            .values(consumed_at=func.now(), consumed_by=user.id)
            .returning(
                Invitation.tenant_id,
                Invitation.role,
                Invitation.invited_by,
                Invitation.created_at,
                Invitation.consumed_at,
            )
            .execution_options(synchronize_session=False, **{tenancy.ALL_TENANTS: True})
        ).one_or_none()
        if row is None:
            raise _NotConsumed
        membership = TenantMember(
            tenant_id=row.tenant_id,
            user_id=user.id,
            role=row.role,
            invited_at=row.created_at,
            invited_by=row.invited_by,
            joined_at=row.consumed_at,
        )
        membership.tenant = invitation.tenant
        db.session.add(membership)
        db.session.flush()
    db.session.expire(invitation, ["consumed_at", "consumed_by"])  # changed behind the ORM's back
    return membership


def _already_member(invitation: Invitation, user: User) -> Accepted:
    membership = teams.membership_of(invitation.tenant_id, user.id)
    if membership is None:  # removed again in the meantime
        raise Gone(gone_message(invitation, state_of(invitation)))
    return Accepted(membership, joined=False)
