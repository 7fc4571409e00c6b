"""A team's join links, the admin's side: make one (the raw token returned once), list, revoke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import aliased

from nyxcore.errors import Conflict, InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import JoinLink, User
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit, domain_policy
from nyxcore.services.invitations import tokens
from nyxcore.services.invitations.display import utc
from nyxcore.services.invitations.states import aware, now
from nyxcore.tenancy import Actor

# Make, list and revoke a team's links; it lets people in, so only from a verified address.
MANAGE = Operation("join_links.manage", TenantRole.ADMIN, needs_verified_email=True)
ROLES = (TenantRole.MEMBER, TenantRole.VIEWER)
LINK_MAX_DAYS = 30
MAX_USES = 1000
LISTED = 100


class LinkState(StrEnum):
    OPEN = "open"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used up"


@dataclass(frozen=True)
class CreatedLink:
    link: JoinLink
    token: str  # the raw token: shown once to its maker, kept nowhere


@dataclass(frozen=True)
class LinkRow:
    """One line of the admin's list: the columns it shows."""

    id: uuid.UUID
    role: TenantRole
    uses: int
    max_uses: int
    allowed_domains: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    creator_name: str | None

    @property
    def state(self) -> LinkState:
        return _state(self.revoked_at, self.expires_at, self.uses, self.max_uses)

    @property
    def uses_left(self) -> int:
        return max(self.max_uses - self.uses, 0)


def _state(revoked_at: datetime | None, expires_at: datetime, uses: int, max_uses: int) -> LinkState:
    if revoked_at is not None:
        return LinkState.REVOKED
    if uses >= max_uses:
        return LinkState.USED_UP
    if aware(expires_at) <= now():
        return LinkState.EXPIRED
    return LinkState.OPEN


def state_of(link: JoinLink) -> LinkState:
    """The link's state from its own columns."""
    return _state(link.revoked_at, link.expires_at, link.uses, link.max_uses)


def _validate(role: TenantRole, days: int, max_uses: int) -> None:
    if role not in ROLES:
        raise InvalidInput("A join link makes people members or viewers, never admins or owners.", field="role")
    if not 1 <= days <= LINK_MAX_DAYS:
        raise InvalidInput(f"A join link works for 1 to {LINK_MAX_DAYS} days.", field="days")
    if not 1 <= max_uses <= MAX_USES:
        raise InvalidInput(f"A join link can be used 1 to {MAX_USES} times.", field="max_uses")


def create(actor: Actor, *, role: TenantRole, days: int, max_uses: int, domains: str = "") -> CreatedLink:
    """Make a join link for the actor's team; audit logged. Raises InvalidInput."""
    MANAGE.check(actor)
    _validate(role, days, max_uses)
    allowed = domain_policy.parse_allowlist(domains, field="domains")  # the team policy's parser: IDNs alike
    token = tokens.new_token()
    link = JoinLink(
        tenant_id=actor.tenant_id,
        token_hash=tokens.hash_token(token),
        role=role,
        max_uses=max_uses,
        uses=0,
        allowed_domains=" ".join(allowed),
        created_by=actor.user_id,
        expires_at=now() + timedelta(days=days),
    )
    db.session.add(link)
    db.session.flush()
    audit.record(
        actor.tenant_id,
        actor.user_id,
        "join_link.created",
        target=str(link.id),
        role=role.value,
        max_uses=max_uses,
        expires_at=utc(link.expires_at),
        domains=link.allowed_domains,
    )
    return CreatedLink(link, token)


def list_links(actor: Actor) -> list[LinkRow]:
    """The actor's team's LISTED newest join links, in every state, with who made them (one statement)."""
    MANAGE.check(actor)
    creator = aliased(User)
    rows = db.session.execute(
        select(
            JoinLink.id,
            JoinLink.role,
            JoinLink.uses,
            JoinLink.max_uses,
            JoinLink.allowed_domains,
            JoinLink.created_at,
            JoinLink.expires_at,
            JoinLink.revoked_at,
            creator.name,
        )
        .outerjoin(creator, creator.id == JoinLink.created_by)
        .where(JoinLink.tenant_id == actor.tenant_id)
        .order_by(JoinLink.created_at.desc(), JoinLink.id.desc())
        .limit(LISTED)
    ).all()
    return [LinkRow(*row) for row in rows]


def revocable(actor: Actor, link_id: uuid.UUID) -> JoinLink:
    """One of the team's links that is not revoked yet (locked). Raises NotFound, Conflict."""
    MANAGE.check(actor)
    link = db.session.scalar(
        select(JoinLink).where(JoinLink.id == link_id, JoinLink.tenant_id == actor.tenant_id).with_for_update()
    )
    if link is None:
        raise NotFound("There is no such join link in this team.")
    if link.revoked_at is not None:
        raise Conflict("This join link was already revoked.")
    return link


def revoke(actor: Actor, link_id: uuid.UUID) -> JoinLink:
    """Revoke one of the team's links: it lets nobody else in. Raises NotFound, Conflict; audit logged."""
    link = revocable(actor, link_id)
    link.revoked_at = now()
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "join_link.revoked", target=str(link.id), uses=link.uses)
    return link
