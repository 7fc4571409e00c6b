"""Joining a team by e-mail domain: the domains a team proved it owns, and requests to join.

A `TeamDomain` is verified once a DNS TXT record proved it (services/team_domains.py); a verified
domain belongs to one team only (`uq_team_domains_verified_domain`). People with a verified address
at it see the team under "Teams you can join" and join directly or ask (`JoinRequest`), as the
domain's `join_mode` says.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from nyxcore.models import Base, TenantScoped, _role_column
from nyxcore.roles import TenantRole

VERIFIED_ONLY = "verified_at IS NOT NULL"
OPEN_ONLY = "decided_at IS NULL"


class TeamDomain(TenantScoped, Base):
    """An e-mail domain a team claims; `verified_at` once its DNS TXT record was found."""

    __tablename__ = "team_domains"
    __table_args__ = (
        UniqueConstraint("tenant_id", "domain"),
        # One team per verified domain, whichever team's row it is (RLS hides the others' rows,
        # the index does not).
        Index(
            "uq_team_domains_verified_domain",
            "domain",
            unique=True,
            postgresql_where=text(VERIFIED_ONLY),
            sqlite_where=text(VERIFIED_ONLY),
        ),
        CheckConstraint("join_mode IN ('request', 'direct')", name="join_mode_known"),
        CheckConstraint("join_role IN ('member', 'viewer')", name="join_role_allowed"),
    )

    domain: Mapped[str] = mapped_column(String(253))
    join_mode: Mapped[str] = mapped_column(String(16), server_default="request", default="request")
    join_role: Mapped[TenantRole] = _role_column(default=TenantRole.MEMBER)
    added_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    verified_at: Mapped[datetime | None]
    last_checked_at: Mapped[datetime | None]


class JoinRequest(TenantScoped, Base):
    """Someone asking to join a team through its verified domain; admins approve or decline.

    The requester's name and address are kept on the row: admins of a team they are not in yet may
    not read their account (RLS on `users`).
    """

    __tablename__ = "join_requests"
    __table_args__ = (
        Index("ix_join_requests_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_join_requests_user_id", "user_id"),
        # One open request per person and team.
        Index(
            "uq_join_requests_open",
            "tenant_id",
            "user_id",
            unique=True,
            postgresql_where=text(OPEN_ONLY),
            sqlite_where=text(OPEN_ONLY),
        ),
        CheckConstraint("outcome IN ('approved', 'declined')", name="outcome_known"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[TenantRole] = _role_column()  # the domain's join role when they asked
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    outcome: Mapped[str | None] = mapped_column(String(16))
