"""Two-factor authentication: a user's sealed TOTP secret and their single-use recovery codes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from nyxcore.models import Base, UUIDPrimaryKey


class UserTwoFactor(UUIDPrimaryKey, Base):
    """A user's TOTP secret, sealed with the key ring (associated data: the user id), own rows only.

    `enabled_at` is None while the enrolment is unconfirmed (not active). `last_used_step` is the
    TOTP time step of the last accepted code, so the same code is never accepted twice, and
    `failed_attempts` counts wrong codes offered since the last right one, `last_failed_at` dates the
    last of them: after MAX_FAILED_ATTEMPTS the code step is closed until that is LOCKOUT old.
    """

    __tablename__ = "user_two_factor"
    __table_args__ = (UniqueConstraint("user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    enabled_at: Mapped[datetime | None]
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    last_failed_at: Mapped[datetime | None]


class RecoveryCode(UUIDPrimaryKey, Base):
    """A single-use two-factor recovery code; only its SHA-256 is kept."""

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    used_at: Mapped[datetime | None]
