"""Team roles and the rules between them. Pure functions, no Flask."""

from __future__ import annotations

from enum import StrEnum


class TenantRole(StrEnum):
    """A member's role in one team, ordered OWNER > ADMIN > MEMBER > VIEWER."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def label(self) -> str:
        return self.value.capitalize()


_RANK = {TenantRole.VIEWER: 0, TenantRole.MEMBER: 1, TenantRole.ADMIN: 2, TenantRole.OWNER: 3}
ROLES_HIGH_TO_LOW = (TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER)


def has_min_role(role: TenantRole | None, minimum: TenantRole) -> bool:
    """True when `role` is at least `minimum`; no role (not a member) never is."""
    return role is not None and role.rank >= minimum.rank


def can_manage_role(actor: TenantRole | None, target_current: TenantRole, target_new: TenantRole) -> bool:
    """May `actor` move someone from `target_current` to `target_new` (or act on them at all)?

    Admins manage members and viewers; only owners manage admins and owners. No one grants a
    role above their own or acts on someone whose role is above their own.
    """
    if not has_min_role(actor, TenantRole.ADMIN):
        return False
    assert actor is not None
    if actor is TenantRole.OWNER:
        return True
    return target_current.rank < TenantRole.ADMIN.rank and target_new.rank < TenantRole.ADMIN.rank


def grantable_roles(actor: TenantRole | None) -> list[TenantRole]:
    """The roles `actor` may give in an invitation or a role change, highest first."""
    return [role for role in ROLES_HIGH_TO_LOW if actor is not None and can_manage_role(actor, role, role)]


def article_for(word: str) -> str:
    """The indefinite article before `word` ("an admin", "a member"), for the pages' and mails' sentences."""
    return "an" if word[:1].lower() in "aeiou" else "a"
