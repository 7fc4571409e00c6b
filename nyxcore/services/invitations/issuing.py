"""The admin's side of invitations: invite a list of addresses, list, resend and revoke.

The invitation and its email (sealed in the outbox) are written in one transaction, and Celery is
handed only the outbox id after the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import DateTime, Uuid, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.errors import Conflict, NotFound, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import Invitation, Tenant, TenantMember, User
from nyxcore.pagination import Page
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services import audit, domain_policy, mail, seats, voiding
from nyxcore.services.invitations import addresses, display, limits, tokens
from nyxcore.services.invitations.addresses import InviteOutcome, InviteResult
from nyxcore.services.invitations.display import utc
from nyxcore.services.invitations.message import queue_invitation_email
from nyxcore.services.invitations.states import RESENT, REVOKED, aware, now
from nyxcore.tenancy import Actor

PER_PAGE = 50
# invite, resend, revoke, list; it sends mail to others, so only from a verified address
MANAGE = Operation("invitations.manage", TenantRole.ADMIN, needs_verified_email=True)


def _check_role(actor: Actor, role: TenantRole) -> None:
    if role not in grantable_roles(actor.role):
        raise PermissionDenied(f"Your role cannot invite someone as {role.label.lower()}.", field="role")


def issue_invitation(
    inviter: User, tenant: Tenant, email: str, role: TenantRole, *, reminding_until: datetime | None = None
) -> Invitation:
    """Write an invitation from `inviter` and queue its email, in the current transaction; no checks.

    For the invitation services alone (invite, resend, renew, and the reminder: with `reminding_until`
    the same expiry, marked reminded, the reminder email). Raises Conflict if one is open.
    """
    token = tokens.new_token()
    expires_at = reminding_until or now() + current_app.config["INVITATION_TTL"]
    invitation = Invitation(
        tenant_id=tenant.id,
        token_hash=tokens.hash_token(token),
        email=email,
        role=role,
        invited_by=inviter.id,
        expires_at=expires_at,
        reminded_at=now() if reminding_until else None,
    )
    try:
        with db.session.begin_nested():
            # The email first, so that the invitation is inserted pointing at it (no UPDATE after), and
            # both in the savepoint: a conflict takes the email back with the invitation.
            outbox = queue_invitation_email(
                inviter, tenant, token, email, role, expires_at, reminder=reminding_until is not None
            )
            invitation.outbox_email_id = outbox.id
            db.session.add(invitation)
    except IntegrityError as exc:  # uq_invitations_open_email: a concurrent request invited them first
        mail.unqueue(invitation.outbox_email_id)
        raise Conflict(f"{email} already has an open invitation.", field="emails") from exc
    return invitation


def _actor_user(actor: Actor) -> User:
    user = db.session.get(User, actor.user_id)
    if user is None:
        raise NotFound("Your account no longer exists.")
    return user


def _actor_tenant(actor: Actor) -> Tenant:
    tenant = db.session.get(Tenant, actor.tenant_id)
    if tenant is None:
        raise NotFound("This team no longer exists.")
    return tenant


def _open_invitations_for(tenant_id: uuid.UUID, emails: list[str]) -> dict[str, Invitation]:
    rows = db.session.scalars(
        select(Invitation).where(
            Invitation.tenant_id == tenant_id,
            Invitation.email.in_(emails),
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
    )
    return {invitation.email: invitation for invitation in rows}


def _member_emails(tenant_id: uuid.UUID, emails: list[str]) -> set[str]:
    return set(
        db.session.scalars(
            select(User.email)
            .join(TenantMember, TenantMember.user_id == User.id)
            .where(TenantMember.tenant_id == tenant_id, TenantMember.live_at(func.now()), User.email.in_(emails))
        )
    )


def invite_many(actor: Actor, raw_addresses: str, role: TenantRole) -> list[InviteResult]:
    """Invite every address of a comma or newline separated list (at most 50) to the actor's team.

    Returns one result per distinct address (compared case-insensitively), in the order given.
    An address whose open invitation has expired gets a fresh one. Raises PermissionDenied for a
    role the actor may not grant, InvalidInput for an empty or too long list, RateLimited over the
    team's hourly allowance or the inviter's or instance's daily one (then nobody is invited).
    """
    MANAGE.check(actor)
    _check_role(actor, role)
    results, wanted = addresses.validate(addresses.entries_of(raw_addresses))
    domain_policy.check_addresses(actor.tenant, wanted)  # InvalidInput naming each refused address
    members = _member_emails(actor.tenant_id, wanted) if wanted else set()
    open_invitations = _open_invitations_for(actor.tenant_id, wanted) if wanted else {}
    to_invite = _answer_known(wanted, members, open_invitations, results)
    if not to_invite:
        return list(results.values())
    limits.check_rate(actor.tenant_id, len(to_invite))
    seats.ensure_room(actor.tenant_id, len(to_invite), field="emails")
    limits.spend_daily_allowances(actor, len(to_invite))
    inviter, tenant = _actor_user(actor), _actor_tenant(actor)
    for email in to_invite:
        results[email] = _invite_one(actor, inviter, tenant, email, role, open_invitations.get(email))
    return list(results.values())


def _answer_known(
    wanted: list[str],
    members: set[str],
    open_invitations: dict[str, Invitation],
    results: dict[str, InviteResult],
) -> list[str]:
    """Answer, in `results`, the members and the holders of an unexpired invitation; return the rest."""
    moment = now()
    to_invite = []
    for email in wanted:
        existing = open_invitations.get(email)
        if email in members:
            results[email] = InviteResult(
                email, InviteOutcome.ALREADY_MEMBER, "Already a member of this team."
            )
        elif existing is not None and aware(existing.expires_at) > moment:
            results[email] = InviteResult(
                email,
                InviteOutcome.ALREADY_INVITED,
                f"Already invited; that invitation expires {utc(existing.expires_at)}.",
                existing.id,
            )
        else:
            to_invite.append(email)
    return to_invite


def _invite_one(
    actor: Actor,
    inviter: User,
    tenant: Tenant,
    email: str,
    role: TenantRole,
    expired: Invitation | None,
) -> InviteResult:
    """Invite one address, replacing its `expired` invitation if it has one; audit logged."""
    if expired is not None:
        voiding.void(expired, RESENT, "the invitation expired and was replaced")
    try:
        invitation = issue_invitation(inviter, tenant, email, role)
    except Conflict:  # another admin invited them a moment ago; the rest of the list goes on
        return InviteResult(email, InviteOutcome.ALREADY_INVITED, "Invited just now by someone else.")
    audit.record(actor.tenant_id, actor.user_id, "invitation.created", target=email, role=role.value)
    message = f"Invited as {role.label.lower()}."
    if expired is not None:
        message = f"Invited as {role.label.lower()} (the earlier invitation had expired)."
    return InviteResult(email, InviteOutcome.INVITED, message, invitation.id)


@dataclass(frozen=True)
class PendingInvitation:
    """An open invitation as the pending list shows it: no token hash, no sealed e-mail, no ORM objects."""

    id: uuid.UUID
    email: str
    role: TenantRole
    inviter_name: str | None  # None: the inviter left (or the users policies do not show them)
    expires_at: datetime
    reminded_at: datetime | None
    delivery: display.Delivery
    lifecycle: display.Lifecycle


# PostgreSQL reads the page through `nyxcore_pending_invitations` (migration 0021: planned once per
# connection, under the same policies, filtered by the team named here); SQLite (`make run`) through
# the ORM, whose scoping adds the team.
_PENDING_PAGE = (
    text(
        "SELECT id, email, role, inviter_name, expires_at, reminded_at, queued, queued_at, sent_at, attempts,"
        " has_body, failure, last_error, retry_at, total"
        " FROM nyxcore_pending_invitations(:tenant_id, :limit, :offset)"
    )
    .columns(
        id=Uuid(),
        expires_at=DateTime(timezone=True),
        reminded_at=DateTime(timezone=True),
        queued_at=DateTime(timezone=True),
        sent_at=DateTime(timezone=True),
        retry_at=DateTime(timezone=True),
    )
    .execution_options(**{tenancy.ALL_TENANTS: True})
)
_OPEN = (Invitation.consumed_at.is_(None), Invitation.revoked_at.is_(None))
_OPEN_COUNT = select(func.count()).select_from(Invitation).where(*_OPEN)


def list_pending(actor: Actor, *, page: int, per_page: int = PER_PAGE) -> Page[PendingInvitation]:
    """The actor's team's open invitations (expired ones included), newest first, with inviter and delivery.

    One statement: the page and how many there are.
    """
    page = max(page, 1)
    offset = (page - 1) * per_page
    params = {"tenant_id": actor.tenant_id, "limit": per_page, "offset": offset}
    if db.session.get_bind().dialect.name == "postgresql":
        rows = db.session.execute(_PENDING_PAGE, params).all()
        items = [pending_row(row) for row in rows]
        total = rows[0].total if rows else 0
    else:
        found = db.session.execute(
            select(Invitation, func.count().over())
            .where(*_OPEN)
            .options(joinedload(Invitation.inviter), joinedload(Invitation.outbox_email))
            .order_by(Invitation.created_at.desc(), Invitation.id.desc())
            .limit(per_page)
            .offset(offset)
        ).all()
        items = [_pending_invitation(invitation) for invitation, _ in found]
        total = found[0][1] if found else 0
    if not items and page > 1:  # past the end: no row carried the count
        total = db.session.scalar(_OPEN_COUNT) or 0
    return Page(items, page, per_page, total)


def pending_row(row: Any) -> PendingInvitation:
    """A row of nyxcore_pending_invitations (attributes by column name) as the pending list shows it."""
    outbox = None
    if row.queued:
        outbox = display.OutboxState(
            row.queued_at, row.sent_at, row.attempts, row.has_body, row.failure, row.last_error, row.retry_at
        )
    sent = display.delivery_of(outbox)
    return PendingInvitation(
        row.id,
        row.email,
        TenantRole(row.role),
        row.inviter_name,
        row.expires_at,
        row.reminded_at,
        sent,
        display.open_lifecycle(row.expires_at, sent),
    )


def _pending_invitation(invitation: Invitation) -> PendingInvitation:
    sent = display.delivery(invitation)
    inviter = invitation.inviter
    return PendingInvitation(
        invitation.id,
        invitation.email,
        invitation.role,
        inviter.name if inviter else None,
        invitation.expires_at,
        invitation.reminded_at,
        sent,
        display.open_lifecycle(invitation.expires_at, sent),
    )


def _managed_open_invitation(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """An open invitation of the actor's team whose role the actor may manage, locked for the change."""
    invitation = db.session.scalar(
        select(Invitation)
        .where(Invitation.id == invitation_id, Invitation.tenant_id == actor.tenant_id)
        .with_for_update()
    )
    if invitation is None:
        raise NotFound("There is no such invitation in this team.")
    if invitation.consumed_at is not None:
        raise Conflict(f"The invitation for {invitation.email} has already been accepted.")
    if invitation.revoked_at is not None:
        raise Conflict(f"The invitation for {invitation.email} was already revoked or replaced.")
    if not can_manage_role(actor.role, invitation.role, invitation.role):
        raise PermissionDenied(f"Your role cannot manage an invitation as {invitation.role.label.lower()}.")
    return invitation


def resend(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """Void an open invitation (its link answers 410 "replaced") and send a fresh one to the same address.

    Raises NotFound (not in this team), Conflict (already used or revoked), PermissionDenied, RateLimited.
    """
    return _replace(actor, invitation_id, "invitation.resent")


def renew(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """Replace an expired invitation: a new token, a new expiry and a new email; the old link answers 410.

    Raises NotFound (not in this team), Conflict (used, revoked, or not expired: resend that one),
    PermissionDenied, RateLimited.
    """
    return _replace(actor, invitation_id, "invitation.renewed", expired_only=True)


def _replace(actor: Actor, invitation_id: uuid.UUID, action: str, *, expired_only: bool = False) -> Invitation:
    MANAGE.check(actor)
    limits.check_rate(actor.tenant_id, 1)  # first: the team lock is always taken before invitation rows
    old = _managed_open_invitation(actor, invitation_id)
    if expired_only and aware(old.expires_at) > now():
        raise Conflict(f"The invitation for {old.email} has not expired; resend it to send a new link.")
    if aware(old.expires_at) <= now():  # an expired invitation held no seat; its replacement takes one
        seats.ensure_room(actor.tenant_id)
    limits.spend_daily_allowances(actor, 1)  # once the invitation is known to be replaceable
    voiding.void(old, RESENT, "the invitation was replaced")
    new = issue_invitation(_actor_user(actor), _actor_tenant(actor), old.email, old.role)
    audit.record(actor.tenant_id, actor.user_id, action, target=new.email, role=new.role.value)
    return new


def revocable(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """The open invitation `actor` may revoke (locked). Raises NotFound, Conflict, PermissionDenied."""
    MANAGE.check(actor)
    return _managed_open_invitation(actor, invitation_id)


def revoke(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """Revoke an open invitation; its unsent email is cancelled. Raises NotFound, Conflict, PermissionDenied."""
    invitation = revocable(actor, invitation_id)
    voiding.void(invitation, REVOKED, "the invitation was revoked")
    voiding.record_revoked(actor.tenant_id, actor.user_id, invitation)
    return invitation
