"""Team content: NyxBook notes and the Wardrobe, the tenant features built on the core."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nyxcore.models import Base, TenantScoped, User


class Note(TenantScoped, Base):
    """A NyxBook note: team content that members write and viewers read."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_tenant_id_updated_at", "tenant_id", "updated_at"),)

    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    author: Mapped[User | None] = relationship(foreign_keys=[author_id], lazy="raise")


class WardrobeItem(TenantScoped, Base):
    """An item of the team's shared wardrobe. Members only, reads included."""

    __tablename__ = "wardrobe_items"
    __table_args__ = (Index("ix_wardrobe_items_tenant_id_name", "tenant_id", "name", "id"),)

    name: Mapped[str] = mapped_column(String(120))
    category: Mapped[str] = mapped_column(String(60), default="")
    size: Mapped[str] = mapped_column(String(30), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    added_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
