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

from nyxcore.errors import PermissionDenied
from nyxcore.roles import TenantRole, has_min_role

OPERATIONS: dict[str, Operation] = {}


class HasRole(Protocol):
    """Anything acting in a team: an Actor (or a membership)."""

    @property
    def role(self) -> TenantRole: ...


@dataclass(frozen=True)
class Operation:
    """Something done in a team, and the lowest role that may do it."""

    name: str
    minimum: TenantRole

    def __post_init__(self) -> None:
        if OPERATIONS.setdefault(self.name, self) != self:
            raise ValueError(f"operation {self.name!r} is declared twice with different roles")

    def allows(self, role: TenantRole | None) -> bool:
        """True when `role` (None: not in the team) is at least this operation's minimum."""
        return has_min_role(role, self.minimum)

    def check(self, actor: HasRole) -> None:
        """Raise PermissionDenied unless the actor's role allows this operation."""
        if not self.allows(actor.role):
            raise PermissionDenied(f"This needs the {self.minimum.label} role or higher in this team.")


def operation(name: str) -> Operation:
    """The declared operation called `name`; KeyError for a name nothing declares (a typo in a template)."""
    return OPERATIONS[name]
