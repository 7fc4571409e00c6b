"""Accounts: signing up and logging in.

The app role never reads a password hash (migration 0004). Logging in asks the database for the
hash's parameters and salt (`nyxcore_password_setting`), computes the candidate hash here, and asks
the database whether it matches (`nyxcore_login`). SQLite (development) has no roles: there the
same two steps read the row directly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from nyxcore import passwords
from nyxcore.errors import Conflict, InvalidInput, NotFound
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


def stored_form(address: str) -> str:
    """The form in which `address` would be stored, for looking an account up by what was typed.

    Validated and normalised as sign-up stores it (an internationalised domain typed in its xn--
    form finds the account), else only trimmed and lower-cased: then it matches no account.
    """
    try:
        return validated_email(address)
    except InvalidInput:
        return normalise_email(address)


def register_user(
    *, user_id: uuid.UUID, team_id: uuid.UUID, name: str, email: str, password: str, verified: bool = False
) -> tuple[User, TenantMember]:
    """Create user `user_id` and their personal team `team_id` (they own it). Raises Conflict on a taken email.

    Run it as the new user in the new team (authz.acting_for_a_new_account): row-level security
    lets one create only one's own row, and a team's rows only in its context. Other accounts are
    invisible to the app role, so a taken address is found by the unique index. The password is
    hashed before that, so a taken address costs the same Argon2 work as a free one.
    """
    user = create_account(user_id=user_id, name=name, email=email, password=password, verified=verified)
    return user, add_personal_team(user, team_id)


def add_personal_team(user: User, team_id: uuid.UUID) -> TenantMember:
    """Make team `team_id`, named after `user`, with them as its owner (run in that team's context)."""
    _, membership = teams.create_team(creator=user, tenant_id=team_id, name=personal_team_name(user.name))
    return membership


def create_account(*, user_id: uuid.UUID, name: str, email: str, password: str, verified: bool) -> User:
    """Create user `user_id` alone (no team; run as that user). Raises Conflict on a taken email."""
    email = validated_email(email)
    user = User(
        id=user_id,
        name=name.strip(),
        email=email,
        password_hash=passwords.hash_password(password),
        email_verified_at=datetime.now(UTC) if verified else None,
    )
    try:
        with db.session.begin_nested():
            db.session.add(user)
    except IntegrityError as exc:  # uq_users_email, also when a concurrent sign-up won the race
        raise Conflict("An account with this email already exists. Log in instead.", field="email") from exc
    return user


def address_in_use(email: str) -> bool:
    """Whether an account uses `email`. For the app's own decisions only: never shown as such."""
    return _password_setting(normalise_email(email)) is not None


def personal_team_name(name: str) -> str:
    first = name.split()[0] if name.split() else "My"
    return f"{first}'s team"[:80]


@dataclass(frozen=True)
class ProvedPassword:
    """An account whose password was just proved, and whether its stored hash uses old parameters."""

    user_id: uuid.UUID
    needs_rehash: bool


def check_password(*, email: str, password: str) -> ProvedPassword | None:
    """The account with these credentials, or None.

    The same answer and the same work (one Argon2id computation) for an unknown email and a wrong
    password. Needs no tenant context: it asks the database's two log-in functions.
    """
    email = stored_form(email)
    setting = _password_setting(email)
    candidate = passwords.candidate_hash(setting or passwords.unknown_setting(), password)
    user_id = _login(email, candidate) if setting is not None and candidate is not None else None
    if user_id is None or setting is None:
        return None
    return ProvedPassword(user_id, passwords.setting_needs_rehash(setting))


WRONG_PASSWORD = "That is not your current password."  # noqa: S105 (a message, not a password)


def prove_password(user: User, password: str, *, field: str = "password") -> None:
    """Raise InvalidInput on `field` unless `password` is `user`'s own (one Argon2id computation).

    For the forms that ask a signed-in user for their password again before a sensitive change.
    """
    proved = check_password(email=user.email, password=password or "")
    if proved is None or proved.user_id != user.id:
        raise InvalidInput(WRONG_PASSWORD, field=field)


def signed_in_user(proved: ProvedPassword, password: str) -> User:
    """The user who just proved `password`, with their stored hash upgraded if its parameters are old.

    Run it as that user (row-level security shows a user their own row). Raises NotFound if the
    account vanished in between.
    """
    user_id = proved.user_id
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("This account no longer exists.")
    if proved.needs_rehash:
        db.session.execute(
            update(User).where(User.id == user_id).values(password_hash=passwords.hash_password(password))
        )
    return user


def _on_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _password_setting(email: str) -> str | None:
    if _on_postgresql():
        setting: str | None = db.session.scalar(
            text("SELECT nyxcore_password_setting(:email)"), {"email": email}
        )
        return setting
    stored = db.session.scalar(select(User.password_hash).where(User.email == email))
    return stored[: stored.rindex("$")] if stored and "$" in stored else None


def _login(email: str, candidate: str) -> uuid.UUID | None:
    if _on_postgresql():
        found = db.session.scalar(
            text("SELECT nyxcore_login(:email, :candidate)"), {"email": email, "candidate": candidate}
        )
    else:
        found = db.session.scalar(
            select(User.id).where(User.email == email, User.password_hash == candidate)
        )
    return uuid.UUID(str(found)) if found is not None else None
