"""What the admin's pending list and the invitee's pages say about an invitation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from nyxcore.models import Invitation, OutboxEmail, User
from nyxcore.roles import TenantRole, article_for, grantable_roles
from nyxcore.services import mail, mail_failures
from nyxcore.services.invitations.states import InvitationState, aware, is_expired, now
from nyxcore.timezones import minutes


@dataclass(frozen=True)
class Delivery:
    """The state of an invitation's email, for the admin's pending list; `reason` is in words."""

    state: Literal["queued", "sent", "failed", "not queued"]
    at: datetime | None = None
    reason: str | None = None
    attempts: int = 0
    retry_at: datetime | None = None
    gave_up: bool = False

    @property
    def summary(self) -> str:
        """What went wrong, how often, and what happens next: "the mail server could not be reached;
        next try at 14:05 UTC (2 attempts)". Empty unless an attempt failed."""
        if self.reason is None:
            return ""
        tries = f" ({self.attempts} attempt{'s' if self.attempts != 1 else ''})" if self.attempts else ""
        if self.gave_up:
            return f"{self.reason}{tries}; no more tries"
        if self.retry_at is not None:
            return f"{self.reason}; next try at {clock(self.retry_at)}{tries}"
        return f"{self.reason}; it will be tried again{tries}"


class Lifecycle(StrEnum):
    """Where an invitation stands, as its admins see it."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"  # delivery gave up
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


def utc(moment: datetime) -> str:
    """`moment` as the pages show it: `2026-01-31 09:00 UTC`."""
    return f"{minutes(aware(moment).astimezone(UTC))} UTC"


def clock(moment: datetime) -> str:
    """`14:05 UTC` today, the full `utc` form on another day."""
    moment = aware(moment).astimezone(UTC)
    return moment.strftime("%H:%M UTC") if moment.date() == now().date() else utc(moment)


def article(role: TenantRole) -> str:
    """The indefinite article before the role's name."""
    return article_for(role.value)


@dataclass(frozen=True)
class OutboxState:
    """The columns of an invitation's outbox row that say how its e-mail fares (never its sealed body)."""

    queued_at: datetime
    sent_at: datetime | None
    attempts: int
    has_body: bool
    failure: str | None
    last_error: str | None
    retry_at: datetime | None


def delivery(invitation: Invitation) -> Delivery:
    """Queued, sent (when), or failed (why in words, attempts, next try, or given up). Needs outbox_email loaded."""
    outbox: OutboxEmail | None = invitation.outbox_email
    if outbox is None:
        return delivery_of(None)
    return delivery_of(
        OutboxState(
            outbox.created_at,
            outbox.sent_at,
            outbox.attempts,
            outbox.body_ciphertext is not None,
            outbox.failure,
            outbox.last_error,
            outbox.retry_at,
        )
    )


def delivery_of(outbox: OutboxState | None) -> Delivery:
    """`delivery` from the outbox row's columns (None: the invitation has no e-mail queued)."""
    if outbox is None:
        return Delivery("not queued")
    if outbox.sent_at is not None:
        return Delivery("sent", at=outbox.sent_at, attempts=outbox.attempts)
    gave_up = mail.given_up(outbox.attempts, outbox.has_body)
    if outbox.failure is None and outbox.last_error is None:
        return Delivery("queued", at=outbox.queued_at)
    # last_error alone: cancelled, in our own words (services/mail.cancel_unsent).
    reason = mail_failures.words(outbox.failure) if outbox.failure else outbox.last_error
    return Delivery(
        "failed",
        reason=reason,
        attempts=outbox.attempts,
        retry_at=None if gave_up else outbox.retry_at,
        gave_up=gave_up,
    )


def lifecycle(invitation: Invitation, sent: Delivery | None = None) -> Lifecycle:
    """Accepted, revoked (replaced ones too), expired, failed (delivery gave up), sent or queued.

    An open invitation needs outbox_email loaded, or its `delivery` given as `sent` (the pending
    list has it already); a failure still being retried is queued.
    """
    if invitation.consumed_at is not None:
        return Lifecycle.ACCEPTED
    if invitation.revoked_at is not None:
        return Lifecycle.REVOKED
    if is_expired(invitation):
        return Lifecycle.EXPIRED
    return open_lifecycle(invitation.expires_at, sent or delivery(invitation))


def open_lifecycle(expires_at: datetime, sent: Delivery) -> Lifecycle:
    """Where an open (neither accepted nor revoked) invitation stands, from its expiry and its delivery."""
    if aware(expires_at) <= now():
        return Lifecycle.EXPIRED
    if sent.state == "sent":
        return Lifecycle.SENT
    return Lifecycle.FAILED if sent.gave_up else Lifecycle.QUEUED


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
    """Not for this account. The invited address is not shown: the visitor is not signed in as it."""
    return (
        f"This invitation to {invitation.tenant.name} is not for this account: it was sent to another "
        f"e-mail address than {user.email}. Log out and continue, then log in or sign up with the "
        f"address the invitation was sent to."
    )
