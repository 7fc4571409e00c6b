"""The request boundary: tenant context in, one commit out, errors mapped to pages, safe redirects.

Commit by exception, as indico's request handler does: a request's changes are committed when its
view returns and rolled back when it raises, whatever the status. A view that re-renders a form
with errors says so through `form_page` (or `abandon_changes`), and nothing it flushed is kept.
Side effects wait for the commit: messages for the next page (`notify`) and queued mail reach the
session and Celery only once the transaction is committed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, g, jsonify, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers.response import Response

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import db, login_manager
from nyxcore.services import mail

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
_SKIP_CONTEXT_ENDPOINTS = {"static", "api.health"}
# Added to every response that does not set them itself (one pass over the headers, not one per name).
_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
_SECURE_HEADERS = (*_SECURITY_HEADERS, ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))


EXPIRED_FORM = "This form had expired, so nothing was saved. What you typed is below: check it and submit it again."
V = TypeVar("V", bound=Callable[..., Any])
_KEEP = "nyxcore_keep_changes"  # on g: the view returned and did not abandon its changes
_NOTICES = "nyxcore_notices"  # on g: flash messages waiting for the commit
_CARRIED = "nyxcore_field_error"  # in the session: a refused POST's field error for the page it redirected to


class NyxCoreFlask(Flask):
    """Flask, with the view's outcome (returned or raised) deciding the request's commit."""

    def dispatch_request(self) -> ResponseReturnValue:
        """Run the view; its changes are kept only if it returns (an exception rolls them back)."""
        g.pop(_KEEP, None)
        result = super().dispatch_request()
        g.setdefault(_KEEP, True)  # abandon_changes() may have said False already
        return result


def abandon_changes() -> None:
    """Roll this request back at its end although the view returns (a form shown again with errors)."""
    g.setdefault(_KEEP, False)
    g.pop(_NOTICES, None)


def notify(message: str, category: str = "info") -> None:
    """A message for the next page, shown only if this request's changes are committed."""
    g.setdefault(_NOTICES, []).append((message, category))


def form_status(*forms: FlaskForm) -> int:
    """200, or, when a form shows errors, 400 (or its refusal's status) with the request rolled back."""
    failed = next((form for form in forms if form.errors), None)
    if failed is None:
        return 200
    abandon_changes()
    status: int = getattr(failed, "error_status", 400)
    return status


def form_page(template: str, form: FlaskForm, **context: Any) -> tuple[str, int]:
    """Render a form's page; with errors the request rolls back and answers 400 (or the refusal's status)."""
    status = form_status(form)
    return render_template(template, form=form, **context), status


def redirect_after_failure(message: str, location: str, *, field: str | None = None) -> Response:
    """Post/redirect/get after a refused POST: roll back, show `message` on `location`, answer 303.

    With `field`, the message is shown on that field of the page's form (`carried_errors`), else
    flashed. Either is stored at once (not through `notify`): it is true whatever commits.
    """
    abandon_changes()
    if field is None:
        flash(message, "error")
    else:
        session[_CARRIED] = {"path": urlsplit(location).path, "field": field, "message": message}
    return redirect(location, code=303)


def carried_errors(form: FlaskForm) -> FlaskForm:
    """Show on `form` the field error a refused POST left for this page (once); the page still answers 200."""
    carried = session.get(_CARRIED)
    if isinstance(carried, dict) and carried.get("path") == request.path:
        del session[_CARRIED]
        field = getattr(form, str(carried.get("field")), None)
        if field is not None:
            field.errors = [*field.errors, str(carried.get("message"))]
            form.error_status = 200
    return form


def is_safe_next(target: str | None) -> bool:
    """True only for a path on this site: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and all(ord(c) >= 32 for c in target)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def register_request_hooks(app: Flask) -> None:
    """Bind the tenant context per request, commit once at the end, and add security headers."""

    @app.before_request
    def bind_context() -> tuple[str, int] | None:
        g.request_id = request.headers.get("X-Request-ID", "")[:64] or secrets.token_hex(8)
        g.started_at = time.perf_counter()
        if request.endpoint not in _SKIP_CONTEXT_ENDPOINTS:
            authz.bind_request_actor()
            return show_typed_input_after_sign_out()
        return None

    @app.after_request
    def finish_transaction(response: Response) -> Response:
        # One commit per request, when its view returned; then the messages and queued mail.
        # A request that never touched the database (no session, or no transaction begun) sends nothing.
        used = db.session.registry.has()
        if g.pop(_KEEP, False):
            if used and db.session().in_transaction():
                db.session.commit()
            for message, category in g.pop(_NOTICES, []):
                flash(message, category)
            if used:  # mail is queued on the session
                mail.dispatch_queued()
        elif used:
            db.session.rollback()
            mail.discard_queued()
        return response

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        present = {name.lower() for name in headers.keys()}  # noqa: SIM118 (Headers iterates as pairs)
        defaults = _SECURE_HEADERS if app.config["SESSION_COOKIE_SECURE"] else _SECURITY_HEADERS
        headers.extend([(name, value) for name, value in defaults if name.lower() not in present])
        if (request.endpoint and request.endpoint.startswith("invite.")) or any(
            name.endswith("token") for name in request.view_args or {}
        ):
            # A token in the path (magic links, account links): send only the origin (which CSRF
            # checks over HTTPS need), never the path.
            headers["Referrer-Policy"] = "strict-origin"
        if "x-request-id" not in present:
            headers["X-Request-ID"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def unbind_context(exc: BaseException | None) -> None:
        authz.unbind_request_actor()


def keeps_typed_input(view: V) -> V:
    """Mark a form view whose page is shown again, with what was typed, when its form has expired.

    The view must validate a FlaskForm before it changes anything: that validation refuses the
    stale token again, so the view shows its form (with the values posted and a fresh token) and acts on nothing.
    """
    view.keeps_typed_input = True  # type: ignore[attr-defined]
    return view


def _keeps_typed_input() -> Any | None:
    """The view of this POST if it is marked `keeps_typed_input`, else None."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or request.method != "POST" or not getattr(view, "keeps_typed_input", False):
        return None
    return view


def show_expired_form_again() -> Any | None:
    """For an expired form (a stale CSRF token) on a `keeps_typed_input` view: its page again, or the text."""
    view = _keeps_typed_input()
    if view is None:
        return None
    if "actor" not in g:  # CSRFProtect runs before the request hook: bind the actor now
        authz.bind_request_actor()
    if not current_user.is_authenticated:
        return show_typed_input_after_sign_out()
    flash(EXPIRED_FORM, "warning")
    return view(**(request.view_args or {}))


def show_typed_input_after_sign_out() -> tuple[str, int] | None:
    """A form posted after its session ended: nothing is done, and what was typed is shown to copy.

    None when nothing was typed (the usual log-in redirect then applies). Passwords and tokens are
    never shown back.
    """
    if _keeps_typed_input() is None or current_user.is_authenticated:
        return None
    typed = [
        (name, value)
        for name, value in request.form.items(multi=True)
        if value.strip() and name != "csrf_token" and not any(s in name for s in ("password", "token"))
    ]
    if not typed:
        return None
    return render_template("signed_out_form.html", typed=typed), 401


def render_error(status: int, message: str | None = None) -> tuple[Any, int]:
    title, default_message = ERROR_TITLES.get(status, ("Error", "The request failed."))
    if wants_json():
        return jsonify(error=title, message=message or default_message), status
    return render_template(
        "errors/error.html", status=status, title=title, message=message or default_message
    ), status


def register_error_handlers(app: Flask) -> None:
    """Every error, domain or HTTP, becomes one page (or JSON under /api/) decided here."""

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> tuple[Any, int]:
        return render_error(exc.status_code, exc.message)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        kept = show_expired_form_again()
        if kept is not None:
            return kept
        return render_error(
            400, "The form had expired or was not sent from this site. Reload the page and try again."
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Any, int] | HTTPException:
        if exc.code is None or exc.code < 400:
            return exc
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
