"""Teams you can join: people with a verified address at a team's verified domain join or ask to.

A person outside a team learns only its id and name, through `nyxcore_joinable_teams()`
(SECURITY DEFINER, migration 0011): nothing else of the team is readable to them. Joining and
asking run as that person in the team's context (the view enters it once the team was found
joinable, as a magic link's holder does); approving and declining are the admins', in their team.
Every way in passes the team's domain policy, and the requester hears the outcome by mail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Row, bindparam, select, text
from sqlalchemy.exc import IntegrityError

from nyxcore import tenancy
from nyxcore.errors import Conflict, NotFound
from nyxcore.extensions import db
from nyxcore.models import JoinRequest, Tenant, TenantMember, User
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import account_mail, audit, domain_policy, endings, mail_names, seats, teams
from nyxcore.services.team_domains import JoinMode
from nyxcore.tenancy import Actor

# Approving adds a member and mails the requester.
DECIDE = Operation("join_requests.decide", TenantRole.ADMIN, needs_verified_email=True)
APPROVED, DECLINED = "approved", "declined"


@dataclass(frozen=True)
class JoinableTeam:
    """A team the user may join by their address's domain: all they learn of it."""

    tenant_id: uuid.UUID
    name: str
    join_mode: JoinMode
    join_role: TenantRole
    requested: bool = False  # they asked already; admins have not decided


_SQLITE_JOINABLE = text(
    """
    SELECT t.id AS team_id, t.name AS team_name, d.join_mode, d.join_role
    FROM users AS u
    JOIN team_domains AS d ON d.domain = substr(u.email, instr(u.email, '@') + 1) AND d.verified_at IS NOT NULL
    JOIN tenants AS t ON t.id = d.tenant_id
    WHERE u.id = :user_id AND u.email_verified_at IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM tenant_members AS m
          WHERE m.tenant_id = t.id AND m.user_id = u.id AND (m.ends_at IS NULL OR m.ends_at > :now)
      )
    ORDER BY t.name, t.id
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)))  # stored as the model stores times


def _rows(user: User) -> list[Row[tuple[uuid.UUID, str, str, str]]]:
    if db.session.get_bind().dialect.name == "postgresql":
        # The function reads the acting user from the tenant context (app.user_id), never an argument.
        result = db.session.execute(
            text("SELECT team_id, team_name, join_mode, join_role FROM nyxcore_joinable_teams()")
        )
    else:  # SQLite (development): no row-level security, the same question in plain SQL
        result = db.session.execute(_SQLITE_JOINABLE, {"user_id": user.id.hex, "now": datetime.now(UTC)})
    return list(result.tuples())


def joinable_teams(user: User) -> list[JoinableTeam]:
    """The teams `user` (the acting user) may join or ask to join by their verified address, by name."""
    rows = _rows(user)
    if not rows:
        return []
    requested = set(
        db.session.scalars(
            select(JoinRequest.tenant_id)
            .where(JoinRequest.user_id == user.id, JoinRequest.decided_at.is_(None))
            .execution_options(**{tenancy.ALL_TENANTS: True})
        )
    )
    # One row per team: an address has one domain, and a verified domain belongs to one team.
    return [
        JoinableTeam(
            uuid.UUID(str(team_id)),
            name,
            JoinMode(mode),
            TenantRole(role),
            uuid.UUID(str(team_id)) in requested,
        )
        for team_id, name, mode, role in rows
    ]


def find_joinable(user: User, tenant_id: uuid.UUID) -> JoinableTeam:
    """The team `tenant_id` if `user` may join it by domain; NotFound otherwise (as for any other team)."""
    found = next((team for team in joinable_teams(user) if team.tenant_id == tenant_id), None)
    if found is None:
        raise NotFound("There is no such team you can join.")
    return found


def join_or_ask(user: User, team: JoinableTeam) -> TenantMember | JoinRequest:
    """Join `team` (a direct domain) or ask to (a request domain), as the acting `user`.

    `team` comes from find_joinable, which the caller has just asked. Run in that team's context.
    Returns the new membership or the open request. Raises NotFound (the team is gone),
    PermissionDenied (the team's domain policy keeps the address out), Conflict (asked already).
    """
    tenant_id = team.tenant_id
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("There is no such team you can join.")
    domain_policy.check_address(tenant, user.email)
    if team.join_mode is JoinMode.DIRECT:
        return _add_member(
            tenant, user.id, team.join_role, by=user.id, action="member.joined_by_domain", email=user.email
        )
    if team.requested:
        raise Conflict(f"You asked to join {tenant.name} already. Its admins will let you know.")
    request = JoinRequest(
        tenant_id=tenant_id, user_id=user.id, email=user.email, name=user.name, role=team.join_role
    )
    try:
        with db.session.begin_nested():
            db.session.add(request)
    except IntegrityError:  # uq_join_requests_open: a second click in another tab
        raise Conflict(f"You asked to join {tenant.name} already. Its admins will let you know.") from None
    audit.record(tenant_id, user.id, "join_request.created", target=user.email, role=team.join_role.value)
    db.session.flush()  # now, while the caller is in the team's context (RLS WITH CHECK)
    return request


def _add_member(
    tenant: Tenant, user_id: uuid.UUID, role: TenantRole, *, by: uuid.UUID, action: str, email: str
) -> TenantMember:
    seats.ensure_room(tenant.id)  # locks the team: joins and approvals take seats one at a time
    endings.end_if_over(tenant.id, user_id)  # a membership that ended: this is a fresh join
    membership = TenantMember(tenant_id=tenant.id, user_id=user_id, role=role)
    membership.tenant = tenant
    try:
        with db.session.begin_nested():
            db.session.add(membership)
    except IntegrityError:  # uq_tenant_members_tenant_id_user_id: they are in already
        raise Conflict(f"{email} is a member of {tenant.name} already.") from None
    audit.record(tenant.id, by, action, target=email, role=role.value)
    db.session.flush()  # now, while the caller is in the team's context (RLS WITH CHECK)
    return membership


def open_requests(actor: Actor) -> list[JoinRequest]:
    """The team's undecided requests, oldest first."""
    DECIDE.check(actor)
    return list(
        db.session.scalars(
            select(JoinRequest)
            .where(JoinRequest.decided_at.is_(None))
            .order_by(JoinRequest.created_at, JoinRequest.id)
        )
    )


def _open_request(actor: Actor, request_id: uuid.UUID) -> JoinRequest:
    DECIDE.check(actor)
    request = db.session.scalar(
        select(JoinRequest)
        .where(JoinRequest.id == request_id, JoinRequest.tenant_id == actor.tenant_id)
        .with_for_update()
    )
    if request is None:
        raise NotFound("There is no such request in this team.")
    if request.decided_at is not None:
        raise Conflict(f"The request from {request.email} was {request.outcome} already.")
    return request


def decide(actor: Actor, request_id: uuid.UUID, *, approve: bool) -> JoinRequest:
    """Approve (the requester becomes a member with the request's role) or decline a request.

    Audit logged; the requester is mailed the outcome after commit. Raises NotFound, Conflict
    (decided already), PermissionDenied (the domain policy keeps them out now).
    """
    request = _open_request(actor, request_id)
    request.decided_at, request.decided_by = datetime.now(UTC), actor.user_id
    request.outcome = APPROVED if approve else DECLINED
    if approve:
        domain_policy.check_address(actor.tenant, request.email)
        if teams.membership_of(actor.tenant_id, request.user_id) is None:  # joined another way meanwhile: settled
            _add_member(
                actor.tenant,
                request.user_id,
                request.role,
                by=actor.user_id,
                action="join_request.approved",
                email=request.email,
            )
    else:
        audit.record(actor.tenant_id, actor.user_id, "join_request.declined", target=request.email)
    db.session.flush()
    team = mail_names.for_mail(actor.tenant.name)  # a name its owner chose: no live links in mail
    subject = f"You joined {team}" if approve else f"Your request to join {team}"
    account_mail.queue_account_email(
        request.email,
        "join_request_decided",
        subject,
        team_name=team,
        approved=approve,
        role=request.role.label.lower(),
        teams_link=account_mail.link("/teams/"),
    )
    return request
