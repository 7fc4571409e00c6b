"""A team's domain policy: the e-mail domains people may join it from (empty: any), and one check.

The owner sets the allowlist in the team's settings (`/team/domains`). Every way into a team asks
the same check before it changes anything: an e-mail invitation or a bulk one
(`check_addresses`, invitations/issuing.py), accepting an invitation with the account's address
at that moment, a join link, and joining or asking to join through a verified domain
(`check_address`).
"""

from __future__ import annotations

import re

from nyxcore.errors import InvalidInput, PermissionDenied
from nyxcore.extensions import db
from nyxcore.models import Tenant
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import accounts, audit
from nyxcore.tenancy import Actor

# Team settings: the owner's (as the team's other settings are).
MANAGE = Operation("domain_policy.manage", TenantRole.OWNER)
MAX_DOMAINS = 20
MAX_LENGTH = 1000  # tenants.allowed_email_domains
_SEPARATORS = re.compile(r"[\s,;]+")


def normalise_domain(raw: str, *, field: str = "domain") -> str:
    """The domain of `raw` ("Example.COM", "@example.com", "ada@example.com") as addresses store it.

    Lower case, IDN in the form that address validation gives (so it compares with stored addresses).
    Raises InvalidInput on `field` for what is not a domain with at least one dot.
    """
    entry = raw.strip().rstrip(".").rsplit("@", 1)[-1]
    try:
        domain = domain_of(accounts.validated_email(f"postmaster@{entry}"))
    except InvalidInput:
        raise InvalidInput(f"{raw.strip() or 'That'} is not a domain name.", field=field) from None
    if "." not in domain:
        raise InvalidInput(f"{raw.strip()} is not a domain name.", field=field)
    return domain


def domain_of(email: str) -> str:
    """The domain of a stored (normalised) address."""
    return email.rsplit("@", 1)[-1].lower()


def allowed_domains(tenant: Tenant) -> list[str]:
    """The team's allowlist; empty means anyone may be invited or join."""
    return tenant.allowed_email_domains.split()


def refusal(tenant: Tenant, email: str) -> str | None:
    """Why `email` may not join `tenant` under its domain policy, or None when it may."""
    allowed = allowed_domains(tenant)
    if not allowed or domain_of(email) in allowed:
        return None
    return f"{email} is not at a domain {tenant.name} accepts ({', '.join(allowed)})."


def check_address(tenant: Tenant, email: str) -> None:
    """Raise PermissionDenied, saying why, unless `email` may join `tenant` under its domain policy.

    For every way in of one person: accepting an invitation, a join link, joining by domain.
    """
    message = refusal(tenant, email)
    if message is not None:
        raise PermissionDenied(message, field="email")


def check_addresses(tenant: Tenant, emails: list[str]) -> None:
    """Raise InvalidInput naming each address outside the policy; nobody is invited then.

    For invitations, one address or many: the refusal names every address the policy keeps out.
    """
    refused = [email for email in emails if refusal(tenant, email) is not None]
    if refused:
        allowed = ", ".join(allowed_domains(tenant))
        raise InvalidInput(
            f"{tenant.name} accepts addresses at {allowed} only. Not allowed: {', '.join(refused)}. "
            "Nobody was invited; remove these addresses and send again.",
            field="emails",
        )


def parse_allowlist(raw: str, *, field: str = "domain") -> list[str]:
    """The distinct domains of a space, comma or newline separated list, normalised, in order given.

    The one parser of domain lists: the team's allowlist and a join link's domains. Raises
    InvalidInput on `field` naming the first entry that is not a domain, or for more than MAX_DOMAINS.
    """
    domains: list[str] = []
    for entry in _SEPARATORS.split(raw):
        if entry and (domain := normalise_domain(entry, field=field)) not in domains:
            domains.append(domain)
    if len(domains) > MAX_DOMAINS or len(" ".join(domains)) > MAX_LENGTH:
        raise InvalidInput(
            f"List at most {MAX_DOMAINS} domains, {MAX_LENGTH} characters in all.", field=field
        )
    return domains


def set_allowed_domains(actor: Actor, raw: str) -> list[str]:
    """Replace the team's allowlist with the domains of `raw` (empty: anyone); audit logged.

    Raises PermissionDenied below owner, InvalidInput for an entry that is not a domain.
    """
    MANAGE.check(actor)
    domains = parse_allowlist(raw)
    actor.tenant.allowed_email_domains = " ".join(domains)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "team.allowed_domains_changed", domains=domains)
    return domains
