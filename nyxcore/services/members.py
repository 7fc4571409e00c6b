"""Team members: listing, role changes, removal, ownership."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload

from nyxcore.extensions import db
from nyxcore.models import TenantMember, User

PER_PAGE = 50
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def list_members(*, page: int, search: str = "", per_page: int = PER_PAGE) -> Page[TenantMember]:
    """A page of the active team's members in join order, with their user and inviter loaded (2 queries)."""
    query = select(TenantMember).join(TenantMember.user)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(or_(func.lower(User.name).like(pattern), User.email.like(pattern)))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = db.session.scalars(
        query.options(joinedload(TenantMember.user), joinedload(TenantMember.inviter))
        .order_by(TenantMember.joined_at, TenantMember.id)
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    ).all()
    return Page(list(items), max(page, 1), per_page, total)
