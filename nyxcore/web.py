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
import math
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Flask, flash, g, jsonify, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from flask.wrappers import Request
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers.response import Response

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import db, limiter, login_manager
from nyxcore.services import mail
from nyxcore.templating import viewer_zone

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

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
_SKIP_CONTEXT_ENDPOINTS = {"static", "api.health", "main.favicon"}
# Added to every response that does not set them itself, as (lower-case name, (name, value)).
_SECURITY_HEADERS = tuple(
    (name.lower(), (name, value))
    for name, value in (
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
)
_HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
_SECURE_HEADERS = (*_SECURITY_HEADERS, (_HSTS[0].lower(), _HSTS))


# Hooks, views and error handlers are a few dozen; closures made per request must not pile up.
_SYNC_CACHE_SIZE = 512
_KEEP = "nyxcore_keep_changes"  # on g: the view returned and did not abandon its changes
_NOTICES = "nyxcore_notices"  # on g: flash messages waiting for the commit


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without their fixed cost on a request that sends no cookie.

    Flask builds a new signing serializer (and itsdangerous test-serializes `{}` to make one) on
    every request, also when there is no cookie to read; here it is built once per key set, and a
    request without the cookie gets an empty session at once. Signing, keys and expiry are Flask's.
    """

    def __init__(self) -> None:
        self._serializers: dict[tuple[Any, ...], URLSafeTimedSerializer | None] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if keys not in self._serializers:
            self._serializers[keys] = super().get_signing_serializer(app)
        return self._serializers[keys]

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


class NyxCoreFlask(Flask):
    """Flask, with the view's outcome (returned or raised) deciding the request's commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_interface = CookieSessions()
        self._synchronous: dict[Callable[..., Any], Callable[..., Any]] = {}

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Flask's, with the security headers added to every response that does not set them itself.

        Added to the status line's plain list of pairs (one pass, constants checked once), so every
        answer gets them, error pages included, for less than a pass over a response's Headers.
        """
        defaults = _SECURE_HEADERS if self.config["SESSION_COOKIE_SECURE"] else _SECURITY_HEADERS

        def with_security_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(pair for lower, pair in defaults if lower not in present)
            return start_response(status, headers, exc_info)

        return super().wsgi_app(environ, with_security_headers)

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's answer, once per function: Flask asks it for every hook and view on every request."""
        synchronous = self._synchronous.get(func)
        if synchronous is None:
            if len(self._synchronous) >= _SYNC_CACHE_SIZE:  # per-request closures (after_this_request)
                self._synchronous.clear()
            synchronous = self._synchronous[func] = super().ensure_sync(func)
        return synchronous

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


def is_safe_next(target: str | None) -> bool:
    """True only for a path on this site: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and all(ord(c) >= 32 for c in target)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def current_request_id() -> str:
    """This request's id (the proxy's X-Request-ID, else a fresh one), also for a request refused before the hooks ran."""
    if "request_id" not in g:
        g.request_id = request.headers.get("X-Request-ID", "")[:64] or secrets.token_hex(8)
    request_id: str = g.request_id
    return request_id


def register_request_hooks(app: Flask) -> None:
    """Bind the tenant context per request, commit once at the end, and add security headers."""

    @app.before_request
    def bind_context() -> None:
        current_request_id()
        g.started_at = time.perf_counter()
        if request.endpoint not in _SKIP_CONTEXT_ENDPOINTS:
            authz.bind_request_actor()

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
    def request_headers(response: Response) -> Response:
        # The security headers go on in NyxCoreFlask.wsgi_app; these two depend on the request.
        if (request.endpoint and request.endpoint.startswith("invite.")) or any(
            name.endswith("token") for name in request.view_args or {}
        ):
            # A token in the path (magic links, account links): send only the origin (which CSRF
            # checks over HTTPS need), never the path.
            response.headers["Referrer-Policy"] = "strict-origin"
        if "X-Request-ID" not in response.headers:
            response.headers["X-Request-ID"] = current_request_id()
        return response

    @app.teardown_request
    def unbind_context(exc: BaseException | None) -> None:
        authz.unbind_request_actor()


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
    def csrf_error(exc: CSRFError) -> tuple[Any, int]:
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
