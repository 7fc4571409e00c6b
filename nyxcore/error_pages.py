"""The error pages: every error, domain or HTTP, becomes one page (or JSON under /api/) decided here.

Each page carries the request id to quote; a 429 says when to try again; a database that dropped the
connection answers a clean 503 with Retry-After, and a form whose token expired comes back with what was
typed (web.show_expired_form_again).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, jsonify, render_template
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError

from nyxcore.errors import DomainError
from nyxcore.extensions import db, limiter, login_manager
from nyxcore.templating import viewer_zone
from nyxcore.web import current_request_id, show_expired_form_again, wants_json

log = logging.getLogger("nyxcore.request")

ERROR_TITLES = {
    400: (
        "Bad request",
        "The request could not be understood. If you submitted a form, reload the page and try again.",
    ),
    403: ("Not allowed", "Your role in this team does not allow this."),
    404: ("Not found", "There is nothing here, or it belongs to a team you are not in."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    409: ("Conflict", "This clashes with the current state. Reload the page and try again."),
    410: ("Gone", "This link is no longer valid."),
    413: ("Too large", "The request is larger than this server accepts."),
    429: ("Too many requests", "You are going too fast. Wait a little and try again."),
    500: ("Something went wrong", "An unexpected error occurred. It has been logged; please try again."),
    502: ("Service problem", "A service NyxCore relies on did not answer as expected. Try again later."),
    503: ("Briefly unavailable", "NyxCore cannot reach its database just now. Try again in a few seconds."),
}
# Seconds a 503 (the database unreachable: restarting, failing over) asks the client to wait.
RETRY_AFTER_SECONDS = 5


def render_error(status: int, message: str | None = None) -> tuple[Any, int]:
    """The one error page (or JSON under /api/), with the request id to quote."""
    title, default_message = ERROR_TITLES.get(status, ("Error", "The request failed."))
    request_id = current_request_id()
    if wants_json():
        return jsonify(error=title, message=message or default_message, request_id=request_id), status
    return render_template(
        "errors/error.html", status=status, title=title, message=message or default_message, request_id=request_id
    ), status


def too_many_requests() -> tuple[Any, ...]:
    """The 429 page for a Flask-Limiter limit: when to try again, in words and as Retry-After."""
    wait = _seconds_until_reset()
    if wait is None:  # the limit's storage could not say: the page stays general
        return render_error(429)
    again = viewer_zone().local(datetime.fromtimestamp(time.time() + wait, UTC)).strftime("%H:%M:%S")
    span = f"{wait} second{'s' if wait != 1 else ''}" if wait < 120 else f"about {math.ceil(wait / 60)} minutes"
    message = f"You are going too fast. Try again in {span} (at {again}, {viewer_zone().name})."
    body, status = render_error(429, message)
    return body, status, {"Retry-After": str(wait)}


def _seconds_until_reset() -> int | None:
    try:
        current = limiter.current_limit
        reset_at = current.reset_at if current is not None else None
    except Exception:  # whatever the limit's storage raises, the 429 page must still answer
        return None
    return None if reset_at is None else max(1, math.ceil(reset_at - time.time()))


def register_error_handlers(app: Flask) -> None:
    """Every error, domain or HTTP, becomes one page (or JSON under /api/) decided here."""

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> tuple[Any, int]:
        return render_error(exc.status_code, exc.message)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        # Only a token that expired or went missing (a long pause, a new log in elsewhere) brings the
        # form back; a referrer that does not match is refused as it stands.
        try:
            kept = show_expired_form_again() if "token" in (exc.description or "") else None
        except DomainError as refused:  # the form's object is gone, or the role no longer allows it
            return render_error(refused.status_code, refused.message)
        except HTTPException as refused:  # raised inside this handler, Flask would not route it: a 500
            return render_error(refused.code or 400)
        if kept is not None:
            return kept
        return render_error(
            400, "The form had expired or was not sent from this site. Reload the page and try again."
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Any, ...] | HTTPException:
        if exc.code is None or exc.code < 400:
            return exc
        if exc.code == 429:
            return too_many_requests()
        return render_error(exc.code)

    @app.errorhandler(InternalServerError)
    def internal_error(exc: InternalServerError) -> tuple[Any, ...]:
        if database_unreachable(exc.original_exception):
            return database_unavailable(exc.original_exception)
        # No rollback here: it would expire what the layout shows; after_request rolls back (it raised).
        log.error("unhandled error", exc_info=exc.original_exception or exc)
        if not db.session.is_active:
            # A failed flush already rolled back and expired it all: any lazy load would raise again.
            db.session.rollback()
            g.actor, g.my_teams = None, []
        return render_error(500)


def database_unreachable(error: BaseException | None) -> bool:
    """Whether `error` says the database connection is gone (a restart, a failover), not a bug.

    An error the server answered with carries a SQLSTATE (a deadlock 40P01, a statement timeout
    57014: psycopg2 raises those as OperationalError too); those are faults to log, not an outage.
    A lost or refused connection has none.
    """
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    no_answer = getattr(getattr(error, "orig", None), "pgcode", None) is None
    return isinstance(error, OperationalError | InterfaceError) and no_answer


def database_unavailable(error: BaseException | None) -> tuple[Any, ...]:
    """A clean 503 for a request the database dropped: no traceback, a Retry-After, logged briefly.

    SQLAlchemy has already invalidated the pool's connections to the old server, so the next
    requests connect afresh: once the database answers again, service resumes by itself.
    """
    log.warning("database unreachable: %s", type(error).__name__)
    with contextlib.suppress(SQLAlchemyError):  # the connection is gone: rolling back may fail too
        db.session.rollback()
    # The layout must not query the database again: no teams, and an anonymous user (or Flask-Login's
    # context processor would call the user loader once more).
    g.actor, g.my_teams = None, []
    login_manager._update_request_context_with_user()
    body, status = render_error(503)
    return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}
