"""Account links: reset a password, verify an address, confirm a new address.

Like invitation tokens: 32 random bytes, URL-safe, in the mail only; the database keeps the
SHA-256. Each is single use (consumed by one conditional UPDATE, so of concurrent uses one wins)
and short-lived. Looking a link up never uses it (mail scanners follow links).

A user issues their own tokens (row-level security: own rows); a link's holder finds the one row
whose hash they present (authz.presenting_account_token), then acts as its user to use it.
Password reset tokens are issued by the database (services/recovery.py): the one asking is anonymous.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update

from nyxcore.errors import Gone, NotFound
from nyxcore.extensions import db
from nyxcore.models import AccountToken

TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
UNKNOWN_LINK = "This link is not valid. Check that you opened the whole link from the email."
USED_LINK = "This link was already used. Each link works once."
EXPIRED_LINK = "This link has expired."


class Purpose(StrEnum):
    RESET_PASSWORD = "reset_password"  # noqa: S105 (a purpose, not a password)
    VERIFY_EMAIL = "verify_email"
    CHANGE_EMAIL = "change_email"


def now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite (development) gives timestamps back without their zone; they are stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def new_token() -> str:
    """A fresh raw token: TOKEN_BYTES random bytes, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_presented(token: str) -> str:
    """The hash of a token from a link; NotFound for anything that cannot be one of ours."""
    if not _TOKEN_SHAPE.match(token):
        raise NotFound(UNKNOWN_LINK)
    return hash_token(token)


def issue(user_id: uuid.UUID, purpose: Purpose, ttl: timedelta, *, new_email: str | None = None) -> str:
    """Write a token for `user_id` (run as that user) and return the raw token, for the mail only."""
    token = new_token()
    moment = now()
    db.session.add(
        AccountToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=hash_token(token),
            new_email=new_email,
            created_at=moment,
            expires_at=moment + ttl,
        )
    )
    db.session.flush()
    return token


def find(token: str, purpose: Purpose) -> AccountToken:
    """The token a link stands for, in any state (run with its hash presented). Raises NotFound."""
    found = db.session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == hash_presented(token), AccountToken.purpose == purpose.value
        )
    )
    if found is None:
        raise NotFound(UNKNOWN_LINK)
    return found


def check_usable(token: AccountToken) -> None:
    """Raise Gone (with the reason) unless the token is unused and unexpired."""
    if token.used_at is not None:
        raise Gone(USED_LINK)
    if _aware(token.expires_at) <= now():
        raise Gone(EXPIRED_LINK)


def consume(token: AccountToken) -> None:
    """Mark the token used, atomically (run as its user). Raises Gone if it was used or expired meanwhile."""
    moment = now()
    used = db.session.execute(
        update(AccountToken)
        .where(
            AccountToken.id == token.id,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > moment,
        )
        .values(used_at=moment)
        .returning(AccountToken.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if used is None:
        db.session.refresh(token, ["used_at"])
        check_usable(token)
        raise Gone(USED_LINK)
    db.session.expire(token, ["used_at"])


def void_unused(user_id: uuid.UUID, *purposes: Purpose) -> None:
    """Mark every unused token of `user_id` for these purposes used (run as that user)."""
    db.session.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user_id,
            AccountToken.purpose.in_([purpose.value for purpose in purposes]),
            AccountToken.used_at.is_(None),
        )
        .values(used_at=now())
        .execution_options(synchronize_session=False)
    )
