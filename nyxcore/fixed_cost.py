"""What every request pays for Flask's session and the extensions' hooks: only what it uses (issue 15).

A page that sends no cookie and posts no form (most of them, and every health check) still runs
Flask's session interface and the before and after hooks Flask-WTF and Flask-Login register on the
app, each reading the request through Flask's context proxies. Here the session interface returns
at once when there is nothing to read or write, and those hooks are asked only when they have
something to do; what they do then is unchanged. (Flask-Limiter's hooks are trimmed in
`nyxcore.drop_idle_limiter_hook`.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request, session
from flask.ctx import _AppCtxGlobals
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Request, Response
from itsdangerous import URLSafeTimedSerializer

from nyxcore.extensions import login_manager

# Each attribute read through one of Flask's context proxies (`request`, `g`, `session`) looks the
# context up again and makes a bound method: about ten times a plain attribute read. Code that runs
# on every request looks each object up once with these.


def current_request() -> Request:
    """This request itself (what `flask.request` stands for)."""
    found: Request = request._get_current_object()  # type: ignore[attr-defined]
    return found


def request_globals() -> _AppCtxGlobals:
    """This request's `flask.g` itself."""
    found: _AppCtxGlobals = g._get_current_object()
    return found


def current_session() -> SessionMixin:
    """This request's `flask.session` itself."""
    found: SessionMixin = session._get_current_object()  # type: ignore[attr-defined]
    return found


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
        # No Cookie header at all: not even parsed (Werkzeug looks for it through every environ key).
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies
        ):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Flask's, without working out seven cookie settings for a session that has nothing to write.

        Nothing to write: an empty session not emptied by this request, or a session this request did
        not change when the cookie is not re-signed on every request (SESSION_REFRESH_EACH_REQUEST off,
        as NyxCore sets it: a signed-in page then sends no Set-Cookie, as in Flask's own `save_session`).
        """
        if not session.modified and (not session or not self.should_set_cookie(app, session)):
            if session.accessed:  # as Flask does: the answer depends on the cookie
                _vary_on_cookie(response)
            return
        super().save_session(app, session, response)


def _vary_on_cookie(response: Response) -> None:
    """Add `Vary: Cookie`; without a Vary header yet, as a plain header (not through a parsed HeaderSet)."""
    if "Vary" in response.headers:
        response.vary.add("Cookie")
    else:
        response.headers["Vary"] = "Cookie"


def skip_idle_extension_hooks(app: Flask) -> None:
    """Wrap Flask-WTF's CSRF check and Flask-Login's remember-me cookie hook so that they run only
    when they can act. Each wrapped hook keeps its place in the app's hook list."""
    before = app.before_request_funcs.setdefault(None, [])
    before[:] = [_csrf_when_checked(app, hook) if _is_csrf_check(hook) else hook for hook in before]
    after = app.after_request_funcs.setdefault(None, [])
    after[:] = [_remember_when_possible(app, hook) if _is_remember(hook) else hook for hook in after]


def _is_csrf_check(hook: Any) -> bool:
    return getattr(hook, "__module__", "") == "flask_wtf.csrf" and getattr(hook, "__name__", "") == "csrf_protect"


def _is_remember(hook: Any) -> bool:
    return getattr(hook, "__self__", None) is login_manager and hook.__name__ == "_update_remember_cookie"


def _csrf_when_checked(app: Flask, hook: Callable[[], Any]) -> Any:
    """Flask-WTF's before_request hook, called only for the methods it checks (WTF_CSRF_METHODS).

    For any other method it works out the endpoint's exemptions and then returns without checking.
    """

    def csrf_protect() -> Any:
        if current_request().method in app.config["WTF_CSRF_METHODS"]:
            return hook()
        return None

    csrf_protect.__wrapped__ = hook  # type: ignore[attr-defined]
    return csrf_protect


def _remember_when_possible(app: Flask, hook: Any) -> Any:
    """Flask-Login's after_request hook, called only when the session holds its `_remember` key or the
    remember-me cookie is refreshed on every request: without either it does nothing."""

    def update_remember_cookie(response: Response) -> Any:
        if "_remember" in current_session() or app.config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"):
            return hook(response)
        return response

    update_remember_cookie.__wrapped__ = hook  # type: ignore[attr-defined]
    return update_remember_cookie


def csrf_token() -> str:
    """This request's CSRF token for a form's hidden field, as the templates' `csrf_token()` gives it:
    for markup made in Python (the team page's rows), in place of Flask-WTF's `generate_csrf`, which
    would build a serializer to sign it (the first caller of a request signs; the rest read it from `g`)."""
    made: Callable[[], str] = current_app.extensions[_CSRF_FUNCTION]
    return made()


_CSRF_FUNCTION = "nyxcore.csrf_token_function"


def csrf_token_function(app: Flask) -> Callable[[], str]:
    """The templates' `csrf_token()`, kept on `app` for `csrf_token()`: Flask-WTF's `generate_csrf()`,
    with its signing serializer made once.

    `generate_csrf` builds a URLSafeTimedSerializer on every request (itsdangerous test-serializes
    `{}` to make one) and reads its settings through Flask's context proxies. This does the same
    thing with one serializer per secret key: the same salt and key, so the same signed token of
    the same per-session random value (made, as there, the first time a session needs one), kept in
    `g` under the same name, so that a form's hidden field (Flask-WTF's own `generate_csrf`) and
    this give one token per request. Checking a posted token is Flask-WTF's, unchanged.
    """
    serializers: dict[str | bytes, URLSafeTimedSerializer] = {}

    def csrf_token() -> str:
        config = app.config
        field_name = config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        if field_name is None:
            raise RuntimeError("A field name is required to use CSRF.")
        request_g = request_globals()
        token: str | None = request_g.get(field_name)
        if token is not None:
            return token
        secret_key = config.get("WTF_CSRF_SECRET_KEY", app.secret_key)
        if secret_key is None:
            raise RuntimeError("A secret key is required to use CSRF.")
        serializer = serializers.get(secret_key)
        if serializer is None:
            if len(serializers) >= 8:  # keys rotated many times in one process (tests): start again
                serializers.clear()
            serializer = serializers[secret_key] = URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token")
        session_ = current_session()
        if field_name not in session_:
            session_[field_name] = hashlib.sha1(os.urandom(64)).hexdigest()  # noqa: S324 (Flask-WTF's own)
        try:
            token = str(serializer.dumps(session_[field_name]))
        except TypeError:  # as Flask-WTF: a value it cannot sign is replaced
            session_[field_name] = hashlib.sha1(os.urandom(64)).hexdigest()  # noqa: S324
            token = str(serializer.dumps(session_[field_name]))
        setattr(request_g, field_name, token)
        return token

    app.extensions[_CSRF_FUNCTION] = csrf_token  # for `csrf_token()`, markup made in Python
    return csrf_token
