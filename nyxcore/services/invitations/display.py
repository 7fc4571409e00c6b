"""What the admin's pending list and the invitee's pages say about an invitation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from nyxcore.models import Invitation, OutboxEmail, User
from nyxcore.roles import TenantRole, grantable_roles
from nyxcore.services import mail
from nyxcore.services.invitations.states import InvitationState, aware


@dataclass(frozen=True)
class Delivery:
    """The state of an invitation's email, for the admin's pending list."""

    state: Literal["queued", "sent", "failed", "not queued"]
    at: datetime | None = None
    error: str | None = None
    gave_up: bool = False


def utc(moment: datetime) -> str:
    """`moment` as the pages show it: `2026-01-31 09:00 UTC`."""
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def article(role: TenantRole) -> str:
    """The indefinite article before the role's name."""
    return "an" if role.value[0] in "aeiou" else "a"


def delivery(invitation: Invitation) -> Delivery:
    """Queued, sent (when), or failed (why, and whether the outbox gave up). Needs outbox_email loaded."""
    outbox: OutboxEmail | None = invitation.outbox_email
    if outbox is None:
        return Delivery("not queued")
    if outbox.sent_at is not None:
        return Delivery("sent", at=outbox.sent_at)
    if outbox.last_error:
        return Delivery(
            "failed",
            error=outbox.last_error,
            gave_up=outbox.attempts >= mail.MAX_ATTEMPTS or outbox.body_ciphertext is None,
        )
    return Delivery("queued", at=outbox.created_at)


def gone_message(invitation: Invitation, state: InvitationState) -> str:
    """Why a link no longer works, and what to do about it."""
    team = invitation.tenant.name
    inviter = invitation.inviter.name if invitation.inviter else f"an admin of {team}"
    if state is InvitationState.USED:
        return (
            f"This invitation to {team} has already been used. If you accepted it, log in: {team} is "
            f"in your team list. Otherwise ask {inviter} for a new invitation."
        )
    if state is InvitationState.REPLACED:
        return (
            f"This invitation to {team} was replaced by a newer invitation. Use the link in the most "
            f"recent invitation email, or ask {inviter} to send it again."
        )
    if state is InvitationState.REVOKED:
        return f"This invitation to {team} was revoked. Ask {inviter} if you think this is a mistake."
    if state is InvitationState.INVITER_LOST_ROLE:
        return inviter_lost_role_message(invitation)
    return (
        f"This invitation to {team} expired on {utc(invitation.expires_at)}. "
        f"Ask {inviter} to send you a new one."
    )


def inviter_lost_role_message(invitation: Invitation) -> str:
    """Who sent it may no longer grant its role: say so without naming them, and whom to ask instead."""
    team, role = invitation.tenant.name, invitation.role
    granter = min((r for r in TenantRole if role in grantable_roles(r)), key=lambda r: r.rank)
    return (
        f"This invitation was sent by someone who can no longer invite people as {role.label.lower()} "
        f"to {team}. Ask {article(granter)} {granter.label.lower()} of {team} for a new invitation."
    )


def wrong_account_message(invitation: Invitation, user: User) -> str:
    return (
        f"This invitation is for {invitation.email}, but you are logged in as {user.email}. "
        f"Log out, then open the link again and log in or sign up as {invitation.email}."
    )
