"""Invitations by magic link: invite, resend, revoke, look up by token, accept.

The raw token (32 random bytes, URL-safe) exists only in the email and in the link the invitee
follows; the database keeps its SHA-256. The invitation and its email (sealed in the outbox) are
written in one transaction, and Celery is handed only the outbox id after the commit.

Accepting is one conditional `UPDATE ... RETURNING` in the same transaction as the membership it
creates, so of any number of concurrent accepts of one link exactly one wins. An invitation whose
address already belongs to a member is not consumed: accepting it changes nothing and says so.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from flask import current_app, render_template
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.errors import Conflict, Gone, InvalidInput, NotFound, PermissionDenied, RateLimited
from nyxcore.extensions import db, keyring
from nyxcore.models import Invitation, OutboxEmail, Tenant, TenantMember, User
from nyxcore.pagination import Page
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services import accounts, audit, mail, mail_names, quotas
from nyxcore.tenancy import Actor

MANAGE = Operation("invitations.manage", TenantRole.ADMIN)  # invite, resend, revoke, list

TOKEN_BYTES = 32
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet, no padding.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ADDRESS_SEPARATORS = re.compile(r"[,;\r\n]+")
_NAME_AND_ADDRESS = re.compile(r"^[^<>]*<([^<>]+)>$")  # "Ada Lovelace <ada@example.com>"
MAX_ADDRESSES = 50
PER_PAGE = 50
RESENT = "resent"  # revoked_reason of an invitation replaced by a newer one
REVOKED = "revoked"
INVITER_LOST_ROLE = "inviter_lost_role"  # revoked_reason: its inviter may no longer grant its role


class InviteOutcome(StrEnum):
    INVITED = "invited"
    ALREADY_MEMBER = "already_member"
    ALREADY_INVITED = "already_invited"
    INVALID = "invalid"


@dataclass(frozen=True)
class InviteResult:
    """What became of one address of a bulk invite. `invitation_id` is set for invited and already invited."""

    address: str
    outcome: InviteOutcome
    message: str
    invitation_id: uuid.UUID | None = None


class InvitationState(StrEnum):
    OPEN = "open"
    USED = "used"
    REVOKED = "revoked"
    REPLACED = "replaced"
    EXPIRED = "expired"
    INVITER_LOST_ROLE = "inviter_lost_role"  # revoked for that reason, or its inviter can no longer grant it


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


@dataclass(frozen=True)
class Delivery:
    """The state of an invitation's email, for the admin's pending list."""

    state: Literal["queued", "sent", "failed", "not queued"]
    at: datetime | None = None
    error: str | None = None
    gave_up: bool = False


class WrongAccount(PermissionDenied):
    """The signed-in user's address is not the one invited."""


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_addresses(raw: str) -> list[str]:
    """The entries of a comma, semicolon or newline separated list, trimmed, empty ones dropped."""
    entries = []
    for entry in _ADDRESS_SEPARATORS.split(raw):
        entry = entry.strip()
        named = _NAME_AND_ADDRESS.match(entry)
        if named:
            entry = named.group(1).strip()
        if entry:
            entries.append(entry)
    return entries


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite (development) gives timestamps back without their zone; they are stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _check_role(actor: Actor, role: TenantRole) -> None:
    if role not in grantable_roles(actor.role):
        raise PermissionDenied(f"Your role cannot invite someone as {role.label.lower()}.", field="role")


def _check_rate(tenant_id: uuid.UUID, wanted: int) -> None:
    """Refuse more than INVITATIONS_PER_TEAM_PER_HOUR invitations (addresses, resends included) an hour.

    Counted in the database rather than by Flask-Limiter, so that one request inviting 50 people
    counts 50. The team row is locked (FOR NO KEY UPDATE, which does not block inserts of the team's
    rows) so that two concurrent requests cannot both pass the count.
    """
    config = current_app.config
    if not config.get("RATELIMIT_ENABLED", True):
        return
    limit: int = config["INVITATIONS_PER_TEAM_PER_HOUR"]
    db.session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    used = (
        db.session.scalar(
            select(func.count())
            .select_from(Invitation)
            .where(Invitation.created_at > _now() - timedelta(hours=1))  # portable to SQLite (dev)
        )
        or 0
    )
    if used + wanted > limit:
        left = max(limit - used, 0)
        raise RateLimited(
            f"This team may send {limit} invitations an hour and has {left} left now. "
            "Invite fewer people at once, or try again later.",
            field="emails",
        )


def _spend_daily_allowances(actor: Actor, wanted: int) -> None:
    """Count `wanted` invitations against the inviter's and the instance's daily allowances (quotas.py).

    Called after the team's hourly check, so a refusal there spends nothing. Raises RateLimited.
    """
    quotas.spend(
        [
            (quotas.INVITATIONS_PER_USER, str(actor.user_id)),
            (quotas.INVITATIONS_PER_INSTANCE, quotas.INSTANCE),
        ],
        wanted,
        field_name="emails",
    )


def _article(role: TenantRole) -> str:
    return "an" if role.value[0] in "aeiou" else "a"


def _issue(inviter: User, tenant: Tenant, email: str, role: TenantRole) -> Invitation:
    """Write an invitation and queue its email, in the current transaction. Raises Conflict if one is open."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at = _now() + current_app.config["INVITATION_TTL"]
    invitation = Invitation(
        tenant_id=tenant.id,
        token_hash=hash_token(token),
        email=email,
        role=role,
        invited_by=inviter.id,
        expires_at=expires_at,
    )
    try:
        with db.session.begin_nested():
            db.session.add(invitation)
    except IntegrityError as exc:  # uq_invitations_open_email: a concurrent request invited them first
        raise Conflict(f"{email} already has an open invitation.", field="emails") from exc
    # Both names are anyone's choice and the mail goes out from the operator's address: shown, never linked.
    inviter_name, team_name = mail_names.for_mail(inviter.name), mail_names.for_mail(tenant.name)
    context = {
        "inviter_name": inviter_name,
        "team_name": team_name,
        "role": role,
        "article": _article(role),
        "link": f"{current_app.config['PUBLIC_URL']}/invite/{token}",
        "expires_at": expires_at,
        "email": email,
    }
    subject = f"{inviter_name} invited you to {team_name} on NyxCore"
    outbox = mail.queue_email(
        keyring.get(),
        tenant_id=tenant.id,
        to=email,
        subject=subject[:255],
        text_body=render_template("email/invitation.txt", **context),
        html_body=render_template("email/invitation.html", **context),
    )
    invitation.outbox_email_id = outbox.id
    db.session.flush()
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
            .where(TenantMember.tenant_id == tenant_id, User.email.in_(emails))
        )
    )


def invite_many(actor: Actor, raw_addresses: str, role: TenantRole) -> list[InviteResult]:
    """Invite every address of a comma or newline separated list (at most 50) to the actor's team.

    Returns one result per distinct address (compared case-insensitively), in the order given.
    An address whose open invitation has expired gets a fresh one. Raises PermissionDenied for a
    role the actor may not grant, InvalidInput for an empty or too long list, RateLimited over the
    team's hourly allowance or the inviter's or instance's daily one (then nobody is invited).
    """
    _check_role(actor, role)
    entries = parse_addresses(raw_addresses)
    if not entries:
        raise InvalidInput("Enter at least one email address.", field="emails")
    if len(entries) > MAX_ADDRESSES:
        raise InvalidInput(
            f"You entered {len(entries)} addresses; invite at most {MAX_ADDRESSES} at once.", field="emails"
        )
    results: dict[str, InviteResult] = {}
    wanted: list[str] = []
    for entry in entries:
        try:
            email = accounts.validated_email(entry)
        except InvalidInput as exc:
            results.setdefault(entry.lower(), InviteResult(entry, InviteOutcome.INVALID, exc.message))
            continue
        if email not in results:
            results[email] = InviteResult(email, InviteOutcome.INVITED, "")  # placeholder, keeps the order
            wanted.append(email)
    members = _member_emails(actor.tenant_id, wanted) if wanted else set()
    open_invitations = _open_invitations_for(actor.tenant_id, wanted) if wanted else {}
    now = _now()
    to_invite = []
    for email in wanted:
        existing = open_invitations.get(email)
        if email in members:
            results[email] = InviteResult(
                email, InviteOutcome.ALREADY_MEMBER, "Already a member of this team."
            )
        elif existing is not None and _aware(existing.expires_at) > now:
            results[email] = InviteResult(
                email,
                InviteOutcome.ALREADY_INVITED,
                f"Already invited; that invitation expires {_utc(existing.expires_at)}.",
                existing.id,
            )
        else:
            to_invite.append(email)
    if not to_invite:
        return list(results.values())
    _check_rate(actor.tenant_id, len(to_invite))
    _spend_daily_allowances(actor, len(to_invite))
    inviter, tenant = _actor_user(actor), _actor_tenant(actor)
    for email in to_invite:
        expired = open_invitations.get(email)
        if expired is not None:
            _void(expired, RESENT, "the invitation expired and was replaced")
        try:
            invitation = _issue(inviter, tenant, email, role)
        except Conflict:  # another admin invited them a moment ago; the rest of the list goes on
            results[email] = InviteResult(
                email, InviteOutcome.ALREADY_INVITED, "Invited just now by someone else."
            )
            continue
        audit.record(actor.tenant_id, actor.user_id, "invitation.created", target=email, role=role.value)
        message = f"Invited as {role.label.lower()}."
        if expired is not None:
            message = f"Invited as {role.label.lower()} (the earlier invitation had expired)."
        results[email] = InviteResult(email, InviteOutcome.INVITED, message, invitation.id)
    return list(results.values())


def list_pending(*, page: int, per_page: int = PER_PAGE) -> Page[Invitation]:
    """The active team's open invitations (expired ones included), newest first, with inviter and email."""
    query = select(Invitation).where(Invitation.consumed_at.is_(None), Invitation.revoked_at.is_(None))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = max(page, 1)
    items = db.session.scalars(
        query.options(joinedload(Invitation.inviter), joinedload(Invitation.outbox_email))
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return Page(list(items), page, per_page, total)


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


def is_expired(invitation: Invitation) -> bool:
    return _aware(invitation.expires_at) <= _now()


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


def _void(invitation: Invitation, reason: str, why: str) -> None:
    invitation.revoked_at = _now()
    invitation.revoked_reason = reason
    if invitation.outbox_email_id is not None:
        mail.cancel_unsent(invitation.outbox_email_id, f"Not sent: {why} before delivery.")
    db.session.flush()  # frees uq_invitations_open_email for a new invitation to the same address


def resend(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """Void an open invitation (its link answers 410 "replaced") and send a fresh one to the same address.

    Raises NotFound (not in this team), Conflict (already used or revoked), PermissionDenied, RateLimited.
    """
    _check_rate(actor.tenant_id, 1)  # first: the team lock is always taken before invitation rows
    old = _managed_open_invitation(actor, invitation_id)
    _spend_daily_allowances(actor, 1)  # once the invitation is known to be resendable
    _void(old, RESENT, "the invitation was replaced")
    new = _issue(_actor_user(actor), _actor_tenant(actor), old.email, old.role)
    audit.record(actor.tenant_id, actor.user_id, "invitation.resent", target=new.email, role=new.role.value)
    return new


def revoke(actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """Revoke an open invitation; its unsent email is cancelled. Raises NotFound, Conflict, PermissionDenied."""
    invitation = _managed_open_invitation(actor, invitation_id)
    _void(invitation, REVOKED, "the invitation was revoked")
    audit.record(
        actor.tenant_id,
        actor.user_id,
        "invitation.revoked",
        target=invitation.email,
        role=invitation.role.value,
    )
    return invitation


def find_by_token(token: str) -> Invitation:
    """The invitation a magic-link token stands for, in any state, with its team and inviter.

    Puts the token's hash into the tenant context: row-level security shows an invitation (and
    its team) only to the request that presents the token. Raises NotFound for an unknown token.
    """
    if not _TOKEN_SHAPE.match(token):
        raise NotFound(_UNKNOWN_LINK)
    token_hash = hash_token(token)
    tenancy.update_context(invite_token_hash=token_hash)
    invitation = db.session.scalar(
        select(Invitation)
        .options(joinedload(Invitation.tenant), joinedload(Invitation.inviter))
        .where(Invitation.token_hash == token_hash)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    if invitation is None:
        raise NotFound(_UNKNOWN_LINK)
    return invitation


_REVOKED_STATES = {RESENT: InvitationState.REPLACED, INVITER_LOST_ROLE: InvitationState.INVITER_LOST_ROLE}
_UNKNOWN_LINK = "This invitation link is not valid. Check that you opened the whole link from the email."


def state_of(invitation: Invitation) -> InvitationState:
    """The invitation's state from its own columns (whether its inviter may still grant it is not read)."""
    if invitation.consumed_at is not None:
        return InvitationState.USED
    if invitation.revoked_at is not None:
        return _REVOKED_STATES.get(invitation.revoked_reason or "", InvitationState.REVOKED)
    if is_expired(invitation):
        return InvitationState.EXPIRED
    return InvitationState.OPEN


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
        return _inviter_lost_role_message(invitation)
    return (
        f"This invitation to {team} expired on {_utc(invitation.expires_at)}. "
        f"Ask {inviter} to send you a new one."
    )


def _inviter_lost_role_message(invitation: Invitation) -> str:
    """Who sent it may no longer grant its role: say so without naming them, and whom to ask instead."""
    team, role = invitation.tenant.name, invitation.role
    granter = min((r for r in TenantRole if role in grantable_roles(r)), key=lambda r: r.rank)
    return (
        f"This invitation was sent by someone who can no longer invite people as {role.label.lower()} "
        f"to {team}. Ask {_article(granter)} {granter.label.lower()} of {team} for a new invitation."
    )


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
        TenantMember.tenant_id == invitation.tenant_id, TenantMember.user_id == invitation.invited_by
    )
    if lock:
        query = query.with_for_update(read=True)
    context_token = tenancy.update_context(tenant_id=invitation.tenant_id)
    try:
        inviter_role = db.session.scalar(query)
    finally:
        tenancy.reset_context(context_token)
    return invitation.role in grantable_roles(inviter_role)


def revoke_ungrantable(
    actor: Actor, inviter_id: uuid.UUID, inviter_role: TenantRole | None
) -> list[Invitation]:
    """Revoke the open invitations `inviter_id` sent in the actor's team that `inviter_role` cannot grant.

    Call after a member was removed (`inviter_role` None) or given a lower role, once that change is
    flushed. Unsent mail is cancelled; each revocation is audit logged as the actor's doing.
    """
    still_grantable = grantable_roles(inviter_role)
    lost = db.session.scalars(
        select(Invitation)
        .where(
            Invitation.tenant_id == actor.tenant_id,
            Invitation.invited_by == inviter_id,
            Invitation.consumed_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.role.not_in(still_grantable),
        )
        .order_by(Invitation.created_at, Invitation.id)
        .with_for_update()
    ).all()
    for invitation in lost:
        _void(invitation, INVITER_LOST_ROLE, "the inviter can no longer grant its role")
        audit.record(
            actor.tenant_id,
            actor.user_id,
            "invitation.revoked",
            target=invitation.email,
            role=invitation.role.value,
            reason=INVITER_LOST_ROLE,
        )
    return list(lost)


def _membership(tenant_id: uuid.UUID, user_id: uuid.UUID) -> TenantMember | None:
    # A user sees their own memberships and their teams everywhere (RLS own_memberships,
    # member_teams), so this needs no tenant switch.
    return db.session.scalar(
        select(TenantMember)
        .options(joinedload(TenantMember.tenant))
        .where(TenantMember.tenant_id == tenant_id, TenantMember.user_id == user_id)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )


def _addressed_to(invitation: Invitation, user: User) -> bool:
    return accounts.normalise_email(user.email) == accounts.normalise_email(invitation.email)


def acceptance(token: str, user: User | None) -> Acceptance:
    """What the visitor of a magic link may do; changes nothing (mail scanners follow links).

    Raises NotFound (unknown token) or Gone (used, revoked, replaced, expired, or its inviter may no
    longer grant its role; the message says which), except that someone who already accepted it is told they are a member.
    """
    invitation = find_by_token(token)
    state = state_of(invitation)
    if state is InvitationState.OPEN and not _inviter_may_grant(invitation, lock=False):
        state = InvitationState.INVITER_LOST_ROLE
    if state is not InvitationState.OPEN:
        # The one who accepted it (back button, second click) is told they are in, not that it is gone.
        if (
            user is not None
            and invitation.consumed_by == user.id
            and _membership(invitation.tenant_id, user.id)
        ):
            return Acceptance(invitation, Standing.ALREADY_MEMBER)
        raise Gone(gone_message(invitation, state))
    if user is None:
        return Acceptance(invitation, Standing.SIGNED_OUT)
    if not _addressed_to(invitation, user):
        return Acceptance(invitation, Standing.WRONG_ACCOUNT)
    if _membership(invitation.tenant_id, user.id) is not None:
        return Acceptance(invitation, Standing.ALREADY_MEMBER)
    return Acceptance(invitation, Standing.READY)


def wrong_account_message(invitation: Invitation, user: User) -> str:
    return (
        f"This invitation is for {invitation.email}, but you are logged in as {user.email}. "
        f"Log out, then open the link again and log in or sign up as {invitation.email}."
    )


class _NotConsumed(Exception):
    """The conditional UPDATE matched no row: someone else consumed the link, or it expired or was revoked."""


def accept(token: str, user: User) -> Accepted:
    """Consume the invitation and make `user` a member of its team, atomically.

    Raises NotFound (unknown token), Gone (used, revoked, replaced, expired, its inviter may no
    longer grant its role; also for every loser of concurrent accepts), WrongAccount (the user's address is not the invited one).
    A user who is already a member gets their membership back with `joined=False`, and the
    invitation stays open.
    """
    result = acceptance(token, user)
    invitation = result.invitation
    if result.standing is Standing.WRONG_ACCOUNT:
        raise WrongAccount(wrong_account_message(invitation, user))
    if result.standing is Standing.ALREADY_MEMBER:
        return _already_member(invitation, user)
    # RLS WITH CHECK on tenant_members and audit_events requires the invitation's team as the context.
    context_token = tenancy.update_context(tenant_id=invitation.tenant_id)
    # Checked again in this transaction, under a lock, just before the consuming UPDATE: a removal
    # or demotion of the inviter cannot slip in between.
    if not _inviter_may_grant(invitation, lock=True):
        tenancy.reset_context(context_token)
        raise Gone(_inviter_lost_role_message(invitation))
    try:
        membership = _consume(invitation, user)
    except _NotConsumed:
        tenancy.reset_context(context_token)
        # A new statement, so it sees what the winner committed.
        db.session.refresh(invitation, ["consumed_at", "consumed_by", "revoked_at", "revoked_reason"])
        if invitation.consumed_by == user.id:
            return _already_member(invitation, user)
        raise Gone(gone_message(invitation, state_of(invitation))) from None
    except IntegrityError:  # uq_tenant_members_tenant_id_user_id: they joined in a concurrent request
        tenancy.reset_context(context_token)
        return _already_member(invitation, user)
    audit.record(
        invitation.tenant_id, user.id, "invitation.accepted", target=user.email, role=membership.role.value
    )
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
    membership = _membership(invitation.tenant_id, user.id)
    if membership is None:  # removed again in the meantime
        raise Gone(gone_message(invitation, state_of(invitation)))
    return Accepted(membership, joined=False)
