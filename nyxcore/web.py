"""The request boundary: tenant context in, one commit out, errors mapped to pages, safe redirects.

Commit by exception, as indico's request handler does: a request's changes are committed when its
view returns and rolled back when it raises, whatever the status. A view that re-renders a form
with errors says so through `form_page` (or `abandon_changes`), and nothing it flushed is kept.
Side effects wait for the commit: messages for the next page (`notify`) and queued mail reach the
session and Celery only once the transaction is committed.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, g, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import validate_csrf
from werkzeug.routing import Rule
from werkzeug.wrappers.response import Response
from wtforms.validators import ValidationError

from nyxcore import authz
from nyxcore.extensions import db
from nyxcore.fixed_cost import CookieSessions, current_request, request_globals, skip_idle_extension_hooks
from nyxcore.logs import REQUEST_ID
from nyxcore.services import mail

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("nyxcore.request")

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
EXPIRED_FORM = "This form had expired, so nothing was saved. What you typed is below: check it and submit it again."
V = TypeVar("V", bound=Callable[..., Any])
_KEEP = "nyxcore_keep_changes"  # on g: the view returned and did not abandon its changes
_NOTICES = "nyxcore_notices"  # on g: flash messages waiting for the commit
_CARRIED = "nyxcore_field_error"  # in the session: a refused POST's field error for the page it redirected to


class NyxCoreFlask(Flask):
    """Flask, with the view's outcome (returned or raised) deciding the request's commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_interface = CookieSessions()
        self._synchronous: dict[Callable[..., Any], Callable[..., Any]] = {}

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Flask's, with the request's id and the security headers on every response that does not set them.

        The id (the proxy's X-Request-ID, else a fresh one) is kept in the environ, where the error
        pages and the logs find it. The headers are added to the status line's plain list of pairs
        (one pass, constants checked once), so every answer gets them, error pages included, for
        less than a pass over a response's Headers.
        """
        request_id = environ[REQUEST_ID] = _request_id(environ)
        defaults = _SECURE_HEADERS if self.config["SESSION_COOKIE_SECURE"] else _SECURITY_HEADERS

        def with_security_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(pair for lower, pair in defaults if lower not in present)
            if "x-request-id" not in present:
                headers.append(("X-Request-ID", request_id))
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
        request_g = request_globals()
        request_g.pop(_KEEP, None)
        result = super().dispatch_request()
        request_g.setdefault(_KEEP, True)  # abandon_changes() may have said False already
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


def _path_carries_token(rule: Rule) -> bool:
    """A magic-link page, or any route with a `...token` argument (account links) in its path."""
    return rule.endpoint.startswith("invite.") or any(name.endswith("token") for name in rule.arguments)


def wants_json() -> bool:
    return request.path.startswith("/api/")


# What a proxy's request id looks like (nginx's $request_id: 32 hex digits; others add dots, dashes,
# colons or equals signs): anything else a client sent is not kept, logged or echoed.
_PROXY_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=-]{1,64}")


def _request_id(environ: WSGIEnvironment) -> str:
    """The proxy's X-Request-ID when it looks like one, else a fresh one.

    nginx (nginx.conf) overwrites whatever a client sent; a client reaching gunicorn directly could
    otherwise put any text in the logs and pages that quote the id.
    """
    supplied = environ.get("HTTP_X_REQUEST_ID")
    if supplied and _PROXY_REQUEST_ID.fullmatch(supplied):
        return str(supplied)
    return secrets.token_hex(8)


def current_request_id() -> str:
    """This request's id, the one its response sends in X-Request-ID (NyxCoreFlask.wsgi_app made it).

    A request context made without the WSGI app (`test_request_context`) gets one here.
    """
    environ = request.environ
    if REQUEST_ID not in environ:
        environ[REQUEST_ID] = _request_id(environ)
    request_id: str = environ[REQUEST_ID]
    return request_id


def register_request_hooks(app: Flask) -> None:
    """Bind the tenant context per request, commit once at the end, and add security headers."""
    skip_idle_extension_hooks(app)

    @app.before_request
    def bind_context() -> tuple[str, int] | None:
        this_request = current_request()
        if this_request.endpoint in _SKIP_CONTEXT_ENDPOINTS:
            return None
        authz.bind_request_actor()
        return show_typed_input_after_sign_out() if this_request.method == "POST" else None

    @app.after_request
    def finish_transaction(response: Response) -> Response:
        # One commit per request, when its view returned; then the messages and queued mail.
        # A request that never touched the database (no session, or no transaction begun) sends nothing.
        used = db.session.registry.has()
        request_g = request_globals()
        if request_g.pop(_KEEP, False):
            if used and db.session().in_transaction():
                _commit_at_the_end()
            for message, category in request_g.pop(_NOTICES, []):
                flash(message, category)
            if used:  # mail is queued on the session
                mail.dispatch_queued()
        elif used:
            db.session.rollback()
            mail.discard_queued()
        return response

    @app.after_request
    def hide_token_paths(response: Response) -> Response:
        # The security headers and X-Request-ID go on in NyxCoreFlask.wsgi_app; this one depends on the route.
        rule = current_request().url_rule
        if rule is not None and _path_carries_token(rule):
            # A token in the path (magic links, account links): send only the origin (which CSRF
            # checks over HTTPS need), never the path.
            response.headers["Referrer-Policy"] = "strict-origin"
        return response

    @app.teardown_request
    def unbind_context(exc: BaseException | None) -> None:
        authz.unbind_request_actor()


def _commit_at_the_end() -> None:
    """The request's one commit, without expiring what it loaded: nothing reads those objects again (the
    session ends with the request), and expiring them (the user, membership and team of every signed-in
    page) was work for nothing. What comes after it reads no ORM attribute: flashes and outbox ids."""
    session = db.session()
    configured, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = configured


def keeps_typed_input(view: V) -> V:
    """Mark a form view whose page is shown again, with what was typed, when its form has expired.

    The view must validate a FlaskForm before it changes anything: that validation refuses the
    stale token again, so the view shows its form (with the values posted and a fresh token) and acts on nothing.
    """
    view.keeps_typed_input = True  # type: ignore[attr-defined]
    return view


def _keeps_typed_input() -> Any | None:
    """The view of this POST if it is marked `keeps_typed_input`, else None."""
    if request.method != "POST":  # every GET asks: the cheapest test first
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or not getattr(view, "keeps_typed_input", False):
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


def _posted_from_this_site() -> bool:
    """The form came from one of our pages: its token is still good, or the browser names our origin.

    Without this, a signed-out visitor's browser could be made to post a form from elsewhere and be
    shown the other site's text on ours (escaped, but ours to vouch for).
    """
    try:
        validate_csrf(request.form.get("csrf_token"))
        return True
    except ValidationError:
        source = request.headers.get("Origin") or request.referrer or ""
        return urlsplit(source).netloc == request.host


def show_typed_input_after_sign_out() -> tuple[str, int] | None:
    """A form posted after its session ended: nothing is done, and what was typed is shown to copy.

    None when nothing was typed (the usual log-in redirect then applies). Passwords and tokens are
    never shown back.
    """
    if _keeps_typed_input() is None or current_user.is_authenticated or not _posted_from_this_site():
        return None
    typed = [
        (name, value)
        for name, value in request.form.items(multi=True)
        if value.strip() and name != "csrf_token" and not any(s in name for s in ("password", "token"))
    ]
    if not typed:
        return None
    return render_template("signed_out_form.html", typed=typed), 401
