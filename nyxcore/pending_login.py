"""The log-in step between a proved password and a session, for a user with two-factor on.

No user session exists yet: only a signed marker in the Flask session, naming the user and when
the password was proved, which the code step (`/auth/two-factor`) reads within PENDING_LOGIN_SECONDS.
"""

from __future__ import annotations

import time
import uuid

from flask import session

from nyxcore.authz import end_this_session

# A password proved, a second factor awaited: {"user_id", "at"} in the (signed) session, no user session yet.
PENDING_LOGIN_KEY = "two_factor_login"
PENDING_LOGIN_SECONDS = 5 * 60


def await_second_factor(user_id: uuid.UUID) -> None:
    """After the password of a user with two-factor: no session yet, only a marker for the code step."""
    end_this_session()
    session.clear()
    session[PENDING_LOGIN_KEY] = {"user_id": str(user_id), "at": int(time.time())}


def pending_second_factor() -> uuid.UUID | None:
    """The user whose password was proved in the last PENDING_LOGIN_SECONDS, awaiting a code; or None."""
    marker = session.get(PENDING_LOGIN_KEY) or {}
    try:
        user_id = uuid.UUID(marker["user_id"])
        fresh = 0 <= time.time() - int(marker["at"]) <= PENDING_LOGIN_SECONDS
    except (TypeError, KeyError, ValueError):
        fresh = False
    if not fresh:
        session.pop(PENDING_LOGIN_KEY, None)
        return None
    return user_id


def forget_second_factor() -> None:
    """Drop the pending log in (too many wrong codes: back to the password)."""
    session.pop(PENDING_LOGIN_KEY, None)
