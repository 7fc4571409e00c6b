"""Verified e-mail: the link sent at sign-up (and on request), and proving the address with it.

An address is also proved by a password reset (services/recovery.py), by accepting an invitation
sent to it, and by confirming a new address (services/email_change.py). Operations that mail other
people or reach outside declare `needs_verified_email` (nyxcore/permissions.py).
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, update

from nyxcore.errors import NotFound
from nyxcore.extensions import db
from nyxcore.models import AccountToken, User
from nyxcore.services import account_mail, account_tokens
from nyxcore.services.account_tokens import Purpose


def send_verification(user: User) -> None:
    """Issue a verification link for `user`'s address and queue it (run as that user)."""
    ttl = current_app.config["EMAIL_VERIFICATION_TTL"]
    token = account_tokens.issue(user.id, Purpose.VERIFY_EMAIL, ttl)
    account_mail.queue_account_email(
        user.email,
        "verify_email",
        "Confirm your e-mail address for NyxCore",
        link=account_mail.link(f"/auth/verify/{token}"),
        expires_at=account_tokens.now() + ttl,
    )


def resend(user: User) -> bool:
    """A new verification link for an unverified `user` (run as them); False when already verified."""
    if user.email_verified_at is not None:
        return False
    send_verification(user)
    return True


def mark_verified(user: User) -> None:
    """Record that `user` proved their current address (run as them); keeps an earlier date.

    Unused verification links stop working: they have nothing left to prove, and each would still
    sign its holder in.
    """
    if user.email_verified_at is None:
        db.session.execute(
            update(User)
            .where(User.id == user.id, User.email_verified_at.is_(None))
            .values(email_verified_at=func.now())
        )
        db.session.refresh(user, ["email_verified_at"])
        account_tokens.void_unused(user.id, Purpose.VERIFY_EMAIL)


def verify(token: AccountToken) -> User:
    """Use a verification link (run as its user): the address is verified. Raises Gone or NotFound."""
    account_tokens.consume(token)
    user = db.session.get(User, token.user_id)
    if user is None:
        raise NotFound("This account no longer exists.")
    mark_verified(user)
    account_tokens.void_unused(user.id, Purpose.VERIFY_EMAIL)
    return user
