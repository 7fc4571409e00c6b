"""Password reset by e-mail: asked for anonymously, used once within the hour.

Asking reveals nothing: the same answer and nearly the same work for a known and an unknown
address. The app role cannot see other accounts, so the token is issued by the database
(`nyxcore_issue_password_reset`, migration 0008), which also limits it per address (a few an hour;
beyond that it issues nothing, silently). Using the link sets the password as its user, proves
the address, ends every session of the account, and tells the owner by mail.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, text, update

from nyxcore import passwords
from nyxcore.errors import NotFound
from nyxcore.extensions import db
from nyxcore.models import AccountToken, User
from nyxcore.services import account_mail, account_tokens, accounts, sessions
from nyxcore.services.account_tokens import Purpose

RESETS_PER_HOUR = 3  # as in migration 0008, for SQLite (development)


def request_password_reset(email: str) -> str:
    """Mail a reset link to `email` if an account uses it (and its hourly allowance is not spent).

    Returns the address as normalised, whatever happened: the caller cannot tell either.
    """
    email = accounts.stored_form(email)
    ttl: timedelta = current_app.config["PASSWORD_RESET_TTL"]
    token = account_tokens.new_token()
    expires_at = account_tokens.now() + ttl
    user_id = _issue(email, account_tokens.hash_token(token), expires_at)
    if user_id is None:
        return email
    account_mail.queue_account_email(
        email,
        "reset_password",
        "Reset your NyxCore password",
        link=account_mail.link(f"/auth/reset/{token}"),
        expires_at=expires_at,
    )
    return email


def _issue(email: str, token_hash: str, expires_at: datetime) -> uuid.UUID | None:
    if db.session.get_bind().dialect.name == "postgresql":
        found = db.session.scalar(
            text("SELECT nyxcore_issue_password_reset(:email, :hash, :expires)"),
            {"email": email, "hash": token_hash, "expires": expires_at},
        )
        return uuid.UUID(str(found)) if found is not None else None
    user_id = db.session.scalar(select(User.id).where(User.email == email))  # SQLite: no RLS
    if user_id is None:
        return None
    recent = db.session.scalar(
        select(func.count()).where(
            AccountToken.user_id == user_id,
            AccountToken.purpose == Purpose.RESET_PASSWORD.value,
            AccountToken.created_at > account_tokens.now() - timedelta(hours=1),
            AccountToken.expires_at > account_tokens.now(),
        )
    )
    if (recent or 0) >= RESETS_PER_HOUR:
        return None
    now = account_tokens.now()
    db.session.add(
        AccountToken(
            user_id=user_id,
            purpose=Purpose.RESET_PASSWORD.value,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )
    db.session.flush()
    return user_id


def reset_password(token: AccountToken, password: str) -> User:
    """Use a reset link (run as its user): new password, address verified, every session and every
    other unused account link ended, a notice mailed. Raises Gone (used or expired) or NotFound."""
    account_tokens.consume(token)
    user = db.session.get(User, token.user_id)
    if user is None:
        raise NotFound("This account no longer exists.")
    db.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            password_hash=passwords.hash_password(password),
            email_verified_at=func.coalesce(User.email_verified_at, func.now()),
        )
    )
    db.session.refresh(user, ["email_verified_at"])
    # Every other link dies with the old password: an e-mail change asked for by someone who knew it
    # would otherwise still hand them the account, and a verification link still sign its holder in.
    account_tokens.void_unused(user.id, Purpose.RESET_PASSWORD, Purpose.VERIFY_EMAIL, Purpose.CHANGE_EMAIL)
    sessions.end_all(user.id)
    account_mail.queue_account_email(user.email, "password_changed", "Your NyxCore password was changed")
    return user
