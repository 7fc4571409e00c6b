"""Shareable join links: a team's way in without an invitation for one address."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nyxcore.models import Base, Tenant, TenantScoped, User, _role_column
from nyxcore.roles import TenantRole


class JoinLink(TenantScoped, Base):
    """A link that lets up to `max_uses` signed-in, verified people join a team with `role`.

    Only the token's SHA-256 is kept (services/join_links.py). `uses` is raised by one conditional
    UPDATE per join, so concurrent joins never pass `max_uses`; the database refuses it besides.
    The role is never above member: a link can be forwarded, an admin's role cannot.
    `allowed_domains`: e-mail domains, space-separated, that may use it; empty for any.
    """

    __tablename__ = "join_links"
    __table_args__ = (
        Index("ix_join_links_tenant_id_created_at", "tenant_id", "created_at"),
        CheckConstraint("uses >= 0 AND uses <= max_uses", name="uses_within_max"),
        CheckConstraint("role IN ('member', 'viewer')", name="role_below_admin"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[TenantRole] = _role_column()
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    allowed_domains: Mapped[str] = mapped_column(String(1000), server_default="", default="")
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    creator: Mapped[User | None] = relationship(foreign_keys=[created_by], lazy="raise")
    tenant: Mapped[Tenant] = relationship(lazy="raise")
