"""One's own account: the name, the password, and the browsers signed in (`/account`).

Every function acts on the signed-in user, whom row-level security shows to the app role (the
acting user's own row and sessions); none needs a team.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from nyxcore import passwords, timezones, user_agents
from nyxcore.errors import InvalidInput
from nyxcore.extensions import db
from nyxcore.models import User
from nyxcore.services import account_tokens, accounts, sessions
from nyxcore.services.account_tokens import Purpose

NAME_MAX = 120


def rename(user: User, name: str) -> User:
    """Give the user a new name (1-120 characters once trimmed). Raises InvalidInput."""
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInput(f"Use 1 to {NAME_MAX} characters.", field="name")
    user.name = name
    db.session.flush()
    return user


def set_time_zone(user: User, name: str) -> str | None:
    """Show the user times in the IANA zone `name` ("" goes back to the browser's). Raises InvalidInput."""
    name = name.strip()
    zone = timezones.zone_named(name) if name else None
    if name and zone is None:
        raise InvalidInput(
            f"\u201c{name[: timezones.ZONE_MAX]}\u201d is not a time zone name. "
            "Use one such as Europe/Berlin or America/New_York.",
            field="time_zone",
        )
    user.time_zone = zone.key if zone is not None else None
    db.session.flush()
    return user.time_zone


def change_password(user: User, *, current: str, new: str, keep_token: str) -> int:
    """Set a new password once the current one is proved; every other session of the user ends.

    The session named by `keep_token` (the browser making the change) stays signed in. Unused account
    links stop working: an e-mail change asked for by someone who knew the old password must not
    outlive it, and a verification link signs its holder in (a new one is a click away). Returns how many other sessions ended. Raises InvalidInput (on
    `current_password`) for a wrong password.
    """
    accounts.prove_password(user, current, field="current_password")
    db.session.execute(
        update(User).where(User.id == user.id).values(password_hash=passwords.hash_password(new))
    )
    account_tokens.void_unused(user.id, Purpose.RESET_PASSWORD, Purpose.VERIFY_EMAIL, Purpose.CHANGE_EMAIL)
    return sessions.end_others(user.id, keep_token)


@dataclass(frozen=True)
class SessionSummary:
    """A signed-in browser as the account page shows it."""

    id: uuid.UUID
    browser: str
    address: str
    signed_in_at: datetime
    last_seen_at: datetime
    current: bool


def session_summaries(user: User, *, current_token: str | None, idle: timedelta) -> list[SessionSummary]:
    """The user's live sessions, this browser's (named by `current_token`) first, then by last seen."""
    summaries = [
        SessionSummary(
            id=record.id,
            browser=user_agents.summarise(record.user_agent),
            address=record.ip_address or "unknown",
            signed_in_at=record.created_at,
            last_seen_at=record.last_seen_at,
            current=sessions.is_named_by(record, current_token),
        )
        for record in sessions.live_sessions(user.id, idle=idle)
    ]
    return sorted(summaries, key=lambda summary: not summary.current)  # stable: the rest keep their order
