"""Accounts: signing up and logging in."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nyxcore import passwords
from nyxcore.errors import Conflict, InvalidInput
from nyxcore.extensions import db
from nyxcore.models import TenantMember, User
from nyxcore.services import teams


def normalise_email(address: str) -> str:
    """The form of an address that we store and compare: trimmed and lower-cased."""
    return address.strip().lower()


def validated_email(address: str) -> str:
    """Check the syntax of `address` (no DNS lookups) and return it normalised. Raises InvalidInput."""
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"{address.strip() or 'The address'} is not a valid email address.", field="email"
        ) from exc
    return normalise_email(result.normalized)


def find_user_by_email(address: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalise_email(address)))


def register_user(*, name: str, email: str, password: str) -> tuple[User, TenantMember]:
    """Create a user and their personal team (they are its owner). Raises Conflict on a taken email."""
    email = validated_email(email)
    if find_user_by_email(email) is not None:
        raise Conflict("An account with this email already exists. Log in instead.", field="email")
    user = User(name=name.strip(), email=email, password_hash=passwords.hash_password(password))
    try:
        with db.session.begin_nested():
            db.session.add(user)
    except IntegrityError as exc:  # a concurrent sign-up with the same address won the race
        raise Conflict("An account with this email already exists. Log in instead.", field="email") from exc
    _, membership = teams.create_team(creator=user, name=personal_team_name(user.name))
    return user, membership


def personal_team_name(name: str) -> str:
    first = name.split()[0] if name.split() else "My"
    return f"{first}'s team"[:80]


def authenticate(*, email: str, password: str) -> User | None:
    """The user with these credentials, or None (same answer and time for unknown email or wrong password).

    Upgrades the stored hash when the hashing parameters have changed since it was made.
    """
    user = find_user_by_email(email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    assert user is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
        db.session.flush()
    return user
