"""Joining through a link: where its visitor stands, and the atomic join.

Both run as the link's holder in the link's team (blueprints/join_links.py sets that context:
row-level security shows a join link to the request that presents its token, `join_link_by_token`).
The join locks the team's row for the seat count (services/seats.py), then spends a use with one
conditional `UPDATE ... RETURNING` and adds the membership, in one savepoint: of any number of
concurrent joins exactly `max_uses` win, and a join that fails spends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from nyxcore import tenancy
from nyxcore.errors import EmailNotVerified, Gone, NotFound, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import JoinLink, Tenant, TenantMember, User
from nyxcore.permissions import VERIFY_FIRST, Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit, domain_policy, endings, seats, teams
from nyxcore.services.invitations import tokens
from nyxcore.services.invitations.display import utc
from nyxcore.services.invitations.states import now
from nyxcore.services.join_links.links import LinkState, state_of

# Joining through a link: the joiner has no role in the team yet, so only the verified-address
# half of this declaration is checked (`allows_verification`).
JOIN = Operation("join_links.join", TenantRole.VIEWER, needs_verified_email=True)
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # tokens.new_token(): 32 bytes, URL-safe base64
_UNKNOWN_LINK = "This join link is not valid. Check that you opened the whole link."


class Standing(StrEnum):
    """Where the visitor of a join link stands."""

    SIGNED_OUT = "signed_out"
    UNVERIFIED = "unverified"
    ALREADY_MEMBER = "already_member"
    READY = "ready"


@dataclass(frozen=True)
class Visit:
    link: JoinLink  # with its team loaded
    standing: Standing
    membership: TenantMember | None = None  # when already a member


@dataclass(frozen=True)
class Joined:
    membership: TenantMember  # with its team loaded
    joined: bool  # False: they were a member already and no use was spent


def find_by_token(token: str) -> JoinLink:
    """The join link a token stands for, in any state, its team not loaded yet (`with_team`). Raises NotFound.

    Run it with the token's hash in the tenant context: row-level security shows a join link only
    to the request that presents its token, or in its own team; the team itself only in its context.
    """
    if not _TOKEN_SHAPE.match(token):
        raise NotFound(_UNKNOWN_LINK)
    link = db.session.scalar(
        select(JoinLink)
        .where(JoinLink.token_hash == tokens.hash_token(token))
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    if link is None:
        raise NotFound(_UNKNOWN_LINK)
    return link


def with_team(link: JoinLink) -> JoinLink:
    """`link` with its team loaded, by primary key; run in that team's context. Raises NotFound."""
    tenant = db.session.get(Tenant, link.tenant_id)
    if tenant is None:  # deleted meanwhile
        raise NotFound(_UNKNOWN_LINK)
    set_committed_value(link, "tenant", tenant)
    return link


def gone_message(link: JoinLink) -> str:
    """Why a link that no longer works does not, in words."""
    team = link.tenant.name
    state = state_of(link)
    if state is LinkState.REVOKED:
        return f"This join link for {team} was revoked by an admin of the team. Ask them for a new one."
    if state is LinkState.USED_UP:
        return f"This join link for {team} has been used as many times as it allows ({link.max_uses}). Ask an admin of the team for a new one."
    return f"This join link for {team} expired on {utc(link.expires_at)}. Ask an admin of the team for a new one."


def _domain_allowed(link: JoinLink, user: User) -> bool:
    if not link.allowed_domains:
        return True
    return domain_policy.domain_of(user.email) in link.allowed_domains.split()


def visit(link: JoinLink, user: User | None) -> Visit:
    """What the visitor of `link` (from find_by_token) may do; changes nothing (mail scanners and
    previews follow links).

    Raises Gone (expired, revoked, used up: the message says which), and PermissionDenied when the
    visitor's e-mail domain may not use it. A member is told so whatever the link's state.
    """
    if user is not None and (membership := teams.membership_of(link.tenant_id, user.id)) is not None:
        return Visit(link, Standing.ALREADY_MEMBER, membership)
    if state_of(link) is not LinkState.OPEN:
        raise Gone(gone_message(link))
    if user is None:
        return Visit(link, Standing.SIGNED_OUT)
    if not _domain_allowed(link, user):
        raise PermissionDenied(
            f"This join link for {link.tenant.name} is only for addresses at "
            f"{', '.join(link.allowed_domains.split())}; yours is not. Ask an admin of the team to invite you."
        )
    # The team's own policy too: visit() answers the page and runs again inside join(), before any
    # use is spent.
    domain_policy.check_address(link.tenant, user.email)
    if not JOIN.allows_verification(user.email_verified_at is not None):
        return Visit(link, Standing.UNVERIFIED)
    return Visit(link, Standing.READY)


def join(link: JoinLink, user: User) -> Joined:
    """Make `user` a member of `link`'s team with its role, spending one use, atomically; audit logged.

    Raises Gone (also for the losers of concurrent joins of a link's last uses),
    PermissionDenied (domain), EmailNotVerified, Conflict (no free seat). A member already gets their
    membership back with `joined=False` and no use is spent.
    """
    found = visit(link, user)
    if found.membership is not None:
        return Joined(found.membership, joined=False)
    if found.standing is Standing.UNVERIFIED:
        raise EmailNotVerified(VERIFY_FIRST)
    seats.ensure_room(link.tenant_id)  # locks the team: joins of one team are counted one at a time
    endings.end_if_over(link.tenant_id, user.id)  # a membership that ended: this is a fresh join
    try:
        membership = _spend_use(link, user)
    except _NotSpent:
        db.session.refresh(link, ["uses", "revoked_at", "expires_at"])  # what the winners committed
        raise Gone(gone_message(link)) from None
    except IntegrityError:  # uq_tenant_members_tenant_id_user_id: they joined in a concurrent request
        again = teams.membership_of(link.tenant_id, user.id)
        if again is None:
            raise
        return Joined(again, joined=False)
    audit.record(
        link.tenant_id, user.id, "join_link.joined", target=user.email, role=membership.role.value, link=str(link.id)
    )
    return Joined(membership, joined=True)


class _NotSpent(Exception):
    """The conditional UPDATE matched no row: the link was used up, revoked or expired meanwhile."""


def _spend_use(link: JoinLink, user: User) -> TenantMember:
    with db.session.begin_nested():
        row = db.session.execute(
            update(JoinLink)
            .where(
                JoinLink.id == link.id,
                JoinLink.revoked_at.is_(None),
                JoinLink.expires_at > func.now(),
                JoinLink.uses < JoinLink.max_uses,
            )
            .values(uses=JoinLink.uses + 1)
            .returning(JoinLink.role, JoinLink.created_by, JoinLink.created_at)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is None:
            raise _NotSpent
        membership = TenantMember(
            tenant_id=link.tenant_id,
            user_id=user.id,
            role=row.role,
            invited_by=row.created_by,
            invited_at=row.created_at,
            joined_at=now(),
        )
        membership.tenant = link.tenant
        db.session.add(membership)
        db.session.flush()
    db.session.expire(link, ["uses"])  # changed behind the ORM's back
    return membership
