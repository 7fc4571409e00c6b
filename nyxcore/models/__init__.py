"""The data model: typed SQLAlchemy 2 models. Constraints live in the database, with names.

Some tables live in modules of their own, imported at the end: `two_factor.py` (TOTP secrets,
recovery codes) and `joining.py` (verified domains, join requests).

Every tenant-owned table carries `tenant_id` (TenantScoped) with an index that starts with it;
PostgreSQL row-level security on those tables is set up by the migrations.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ColumnElement,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
    Uuid,
    false,
    func,
    or_,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from nyxcore.roles import TenantRole

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        uuid.UUID: Uuid(),
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON(),
    }


def _role_column(**kwargs: Any) -> Mapped[TenantRole]:
    role_type = Enum(
        TenantRole,
        name="tenant_role",
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda roles: [r.value for r in roles],
        validate_strings=True,
    )
    return mapped_column(role_type, **kwargs)


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class TenantScoped(UUIDPrimaryKey):
    """A row owned by one team. Queries are scoped to the active team in the ORM and by RLS."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))


class User(UUIDPrimaryKey, Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_normalised"),)

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # Written, never read back: the app role has no SELECT on this column (migration 0004). Log in
    # checks a password through nyxcore_login(); see services/credentials.py.
    password_hash: Mapped[str] = mapped_column(String(255), deferred=True, deferred_raiseload=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set while two-factor is on (services/two_factor.py): read with the user, so the per-request
    # check of a team's requirement costs no query.
    two_factor_enabled_at: Mapped[datetime | None]
    # When the address was proved (a verification link, a password reset, an accepted invitation,
    # a confirmed change); None until then. Accounts older than migration 0008 count as verified.
    email_verified_at: Mapped[datetime | None]
    # An IANA zone the person chose on /account for the times they are shown (None: the browser's, else UTC).
    time_zone: Mapped[str | None] = mapped_column(String(64))
    # The team they were last active in, picked again when they log in if they are still a member
    # (authz.bind_request_actor); no foreign key: a deleted team's id is simply never matched.
    last_tenant_id: Mapped[uuid.UUID | None]

    # Flask-Login's user protocol, kept here so the model needs no Flask import.
    is_active = True
    is_anonymous = False

    @property
    def is_authenticated(self) -> bool:
        return True

    def get_id(self) -> str:
        return str(self.id)


# Member search (migration 0017): trigram indexes for LIKE '%term%', read by nyxcore_member_matches().
_TRIGRAMS: dict[str, Any] = {"lower_name": "gin_trgm_ops", "email": "gin_trgm_ops"}
Index("ix_users_name_trgm", func.lower(User.name).label("lower_name"), postgresql_using="gin", postgresql_ops=_TRIGRAMS)
Index("ix_users_email_trgm", User.email, postgresql_using="gin", postgresql_ops=_TRIGRAMS)


class AccountToken(UUIDPrimaryKey, Base):
    """A single-use link for one account: reset its password, verify its address, or change it.

    Only the token's SHA-256 is kept. Under row-level security a user sees their own tokens, and a
    link's holder the one row whose hash they present (`app.account_token_hash`).
    """

    __tablename__ = "account_tokens"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('reset_password', 'verify_email', 'change_email')", name="purpose_known"
        ),
        Index("ix_account_tokens_user_id_purpose", "user_id", "purpose"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    new_email: Mapped[str | None] = mapped_column(String(320))  # change_email: the address to confirm
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Tenant(UUIDPrimaryKey, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Members without two-factor are sent to enrol before any page of the team (authz.role_required).
    require_two_factor: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # The e-mail domains people may join from, space separated, lower case; empty: any (domain_policy).
    allowed_email_domains: Mapped[str] = mapped_column(String(1000), server_default="", default="")
    # Members plus open invitations may not exceed it (services/seats.py); None: unlimited.
    seat_limit: Mapped[int | None] = mapped_column(Integer, CheckConstraint("seat_limit > 0", name="seat_limit_positive"))


class TenantMember(TenantScoped, Base):
    __tablename__ = "tenant_members"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id"),
        Index("ix_tenant_members_tenant_id_joined_at", "tenant_id", "joined_at", "id"),
        Index("ix_tenant_members_user_id_joined_at", "user_id", "joined_at", "id"),
        Index("ix_tenant_members_ends_at", "ends_at", postgresql_where=text("ends_at IS NOT NULL")),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[TenantRole] = _role_column()
    invited_at: Mapped[datetime | None]
    invited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    joined_at: Mapped[datetime] = mapped_column(server_default=func.now())
    ends_at: Mapped[datetime | None]  # services/endings.py: gone at ends_at, warned once before
    end_warned_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="raise")
    inviter: Mapped[User | None] = relationship(foreign_keys=[invited_by], lazy="raise")
    tenant: Mapped[Tenant] = relationship(lazy="raise")

    @classmethod
    def live_at(cls, moment: Any) -> ColumnElement[bool]:
        """SQL: not past its end at `moment`; THE test of "in the team" and "holds a seat" (endings.py)."""
        return or_(cls.ends_at.is_(None), cls.ends_at > moment)


class MembershipNotice(TenantScoped, Base):
    """Why someone lost a team, shown to them once on their next request (services/endings.py)."""

    __tablename__ = "membership_notices"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id"),)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_name: Mapped[str] = mapped_column(String(80))  # the team is no longer theirs to read
    reason: Mapped[str] = mapped_column(Enum("removed", "ended", "left", name="notice_reason", native_enum=False, create_constraint=True, length=16))
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class UserSession(UUIDPrimaryKey, Base):
    """A signed-in browser. The cookie names it by a random token; only the token's SHA-256 is kept.

    A request is signed in only while its row is live: not revoked (log out, "sign out everywhere",
    a password change), not idle past SESSION_IDLE_TIMEOUT, not past `expires_at`.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    ip_address: Mapped[str] = mapped_column(String(45), default="")

    user: Mapped[User] = relationship(lazy="raise")


class OutboxEmail(UUIDPrimaryKey, Base):
    """A message waiting to be sent. Its body is sealed with the key ring and wiped once sent.

    `tenant_id` is the team the message was sent for. Under row-level security a team sees its own
    messages (delivery state), and the worker sees the one message it is delivering (`outbox_id`
    in the tenant context); nobody lists every team's mail.
    """

    __tablename__ = "outbox_emails"
    __table_args__ = (
        Index("ix_outbox_emails_unsent", "created_at", postgresql_where=text("sent_at IS NULL")),
        Index("ix_outbox_emails_tenant_id_created_at", "tenant_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(String(32))
    nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    body_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))  # our own words (a cancellation), never an exception
    failure: Mapped[str | None] = mapped_column(String(24))  # services/mail_failures.FailureKind of the last attempt
    retry_at: Mapped[datetime | None]  # when the next attempt is due; None once sent or given up


_OPEN_UNREMINDED = "consumed_at IS NULL AND revoked_at IS NULL AND reminded_at IS NULL"


class Invitation(TenantScoped, Base):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_tenant_id_created_at", "tenant_id", "created_at"),
        # One open invitation per address and team; consumed or revoked ones do not count.
        Index(
            "uq_invitations_open_email",
            "tenant_id",
            "email",
            unique=True,
            postgresql_where=text("consumed_at IS NULL AND revoked_at IS NULL"),
            sqlite_where=text("consumed_at IS NULL AND revoked_at IS NULL"),
        ),
        # The reminder task's scan: open invitations not reminded yet, by expiry.
        Index(
            "ix_invitations_reminder_due",
            "expires_at",
            postgresql_where=text(_OPEN_UNREMINDED),
            sqlite_where=text(_OPEN_UNREMINDED),
        ),
    )

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[TenantRole] = _role_column()
    invited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    consumed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    reminded_at: Mapped[datetime | None]  # the one reminder before expiry was claimed (tasks.remind_expiring_invitations)
    outbox_email_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("outbox_emails.id", ondelete="SET NULL")
    )

    inviter: Mapped[User | None] = relationship(foreign_keys=[invited_by], lazy="raise")
    tenant: Mapped[Tenant] = relationship(lazy="raise")
    outbox_email: Mapped[OutboxEmail | None] = relationship(lazy="raise")


class GitHubToken(TenantScoped, Base):
    __tablename__ = "github_tokens"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    last_four: Mapped[str] = mapped_column(String(4))
    github_login: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[datetime] = mapped_column(server_default=func.now())
    set_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    setter: Mapped[User | None] = relationship(foreign_keys=[set_by], lazy="raise")


class AuditEvent(TenantScoped, Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_id_at", "tenant_id", "at"),)

    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The actor's name when the event was recorded: still readable after their account is deleted.
    actor_name: Mapped[str | None] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(320))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(server_default=func.now())

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id], lazy="raise")


# Registered on the metadata with the rest: whatever imports the models sees these tables too.
from nyxcore.models.content import Note as Note  # noqa: E402
from nyxcore.models.content import WardrobeItem as WardrobeItem  # noqa: E402
from nyxcore.models.join_links import JoinLink as JoinLink  # noqa: E402
from nyxcore.models.joining import JoinRequest as JoinRequest  # noqa: E402
from nyxcore.models.joining import TeamDomain as TeamDomain  # noqa: E402
from nyxcore.models.two_factor import RecoveryCode as RecoveryCode  # noqa: E402
from nyxcore.models.two_factor import UserTwoFactor as UserTwoFactor  # noqa: E402
