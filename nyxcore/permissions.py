"""Who may do what: each operation declares its minimum role once, here in its service module.

A service module declares its operations (`WRITE = Operation("notes.write", TenantRole.MEMBER)`)
and checks them on the actor it is given (`WRITE.check(actor)`); the view guards itself with the
same object (`@role_required(notes.WRITE)`); templates and the navigation ask `can("notes.write")`.
So a control is shown exactly when using it is allowed, and a service refuses a lower role even if
a view forgot. No Flask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nyxcore.errors import EmailNotVerified, PermissionDenied
from nyxcore.roles import TenantRole, has_min_role

OPERATIONS: dict[str, Operation] = {}
VERIFY_FIRST = "Verify your e-mail address first: open the link we sent you, or ask for a new one."


class HasRole(Protocol):
    """Anything acting in a team: an Actor (or a membership), with `email_verified` when it knows."""

    @property
    def role(self) -> TenantRole: ...


@dataclass(frozen=True)
class Operation:
    """Something done in a team, the lowest role that may do it, and whether it needs a verified address.

    `needs_verified_email`: the operation sends mail to others or reaches outside (invitations,
    GitHub), so an account whose address is not proved yet may not do it, whatever its role.
    `before_two_factor`: allowed to a member who has not turned on the two-factor authentication
    their team requires (leaving the team), where every other page sends them to enrol first.
    """

    name: str
    minimum: TenantRole
    needs_verified_email: bool = False
    before_two_factor: bool = False

    def __post_init__(self) -> None:
        if OPERATIONS.setdefault(self.name, self) != self:
            raise ValueError(f"operation {self.name!r} is declared twice with different roles")

    def allows(self, role: TenantRole | None) -> bool:
        """True when `role` (None: not in the team) is at least this operation's minimum."""
        return has_min_role(role, self.minimum)

    def allows_verification(self, email_verified: bool) -> bool:
        """True unless this operation needs a verified address and `email_verified` is False."""
        return email_verified or not self.needs_verified_email

    def permits(self, role: TenantRole | None, *, email_verified: bool) -> bool:
        """Both checks at once: the role, and the verified address when the operation needs one."""
        return self.allows(role) and self.allows_verification(email_verified)

    def check(self, actor: HasRole) -> None:
        """Raise PermissionDenied unless the actor's role allows this operation (EmailNotVerified
        when only their unverified address stands in the way)."""
        if not self.allows(actor.role):
            raise PermissionDenied(f"This needs the {self.minimum.label} role or higher in this team.")
        # A caller that cannot say (a bare membership) is refused what needs a verified address.
        if not self.allows_verification(getattr(actor, "email_verified", False)):
            raise EmailNotVerified(VERIFY_FIRST)


def operation(name: str) -> Operation:
    """The declared operation called `name`; KeyError for a name nothing declares (a typo in a template)."""
    return OPERATIONS[name]
