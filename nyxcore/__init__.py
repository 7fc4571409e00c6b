"""NyxCore: self-hosted team management for multi-tenant SaaS."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from nyxcore.config import ConfigError, check_production, load_config, trusted_networks

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with `config` overriding (tests pass theirs here)."""
    from nyxcore.web import NyxCoreFlask

    app = NyxCoreFlask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(instance_path=app.instance_path))
    if config:
        app.config.from_mapping(config)
    check_production(app.config)
    configure_logging(app)
    register_proxy(app)
    register_extensions(app)
    check_database_role(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_error_handlers(app)
    register_template_helpers(app)
    register_commands(app)
    return app


# gunicorn's "worker failed to boot": gunicorn stops instead of restarting the worker forever.
EXIT_CONFIG_ERROR = 3


def create_app_or_exit() -> Flask:
    """The app for wsgi.py and worker.py; a configuration an operator must fix exits with its reason.

    One line on stderr instead of a traceback, and exit status 3, which stops gunicorn, Celery and
    `flask` alike.
    """
    try:
        return create_app()
    except ConfigError as exc:
        print(f"nyxcore: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def configure_logging(app: Flask) -> None:
    from nyxcore.logs import configure

    configure(app)


def register_proxy(app: Flask) -> None:
    """Believe X-Forwarded-* only from TRUSTED_PROXIES (nginx); refuse oversized chunked bodies."""
    from nyxcore.middleware import BoundedChunkedBody, TrustedProxyFix

    c = app.config
    try:
        trusted = trusted_networks(c["TRUSTED_PROXIES"])
    except ValueError as exc:
        raise ConfigError(f"TRUSTED_PROXIES is malformed: {exc}") from exc
    app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
        app.wsgi_app,
        trusted,
        x_for=c["PROXY_FIX_X_FOR"],
        x_proto=c["PROXY_FIX_X_PROTO"],
        x_host=c["PROXY_FIX_X_HOST"],
        x_prefix=c["PROXY_FIX_X_PREFIX"],
    )
    app.wsgi_app = BoundedChunkedBody(app.wsgi_app, c["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]


def register_extensions(app: Flask) -> None:
    from nyxcore import database, tasks, tenancy
    from nyxcore.extensions import csrf, db, keyring, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Log in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    csrf.init_app(app)
    limiter.init_app(app)
    drop_idle_limiter_hook(app)
    keyring.init_app(app)
    tasks.celery_init_app(app)
    with app.app_context():
        database.configure_engine(db.engine, ping_idle_seconds=app.config.get("DATABASE_PING_IDLE_SECONDS", 10))
    tenancy.install_orm_scoping()


def drop_idle_limiter_hook(app: Flask) -> None:
    """Flask-Limiter's hooks, run only where they have something to do (issue 15: every request pays).

    Its before_request hook checks only app-wide (default, application, meta) limits. NyxCore
    declares none: its limits decorate views (log in, sign-up, magic links, two-factor), and those
    decorators check them themselves. Without app-wide limits the hook only costs every request a
    resolution of the endpoint's limits, so it is removed. Its after_request hook (the X-RateLimit-*
    headers, conditional deductions) and its teardown read the limiter's state of the request, which
    exists only once a limit was checked; on every other request they run for nothing and are skipped.
    """
    from nyxcore.extensions import limiter

    manager = limiter.limit_manager
    if manager.default_limits or manager.application_limits or limiter._meta_limits:
        return
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:
        hooks.remove(limiter._check_request_limit)
    for table in (app.after_request_funcs, app.teardown_request_funcs):
        table[None] = [_when_limited(hook) if _is_limiters(hook) else hook for hook in table.get(None, [])]


def _is_limiters(hook: Any) -> bool:
    from nyxcore.extensions import limiter

    return getattr(hook, "__self__", None) is limiter or limiter in getattr(hook, "args", ())


def _when_limited(hook: Any) -> Any:
    """`hook`, called only in a request in which Flask-Limiter checked a limit (it then keeps its state)."""
    from flask.globals import request_ctx

    def when_limited(value: Any) -> Any:
        # Asked of the context itself: through the proxy, a missing attribute is raised through its Python
        # __getattr__ (about 7 times slower, and every request asks twice).
        if hasattr(request_ctx._get_current_object(), "_limiter_request_context"):  # type: ignore[attr-defined]
            return hook(value)
        return value  # after_request: the response unchanged (teardown ignores it)

    return when_limited


def check_database_role(app: Flask) -> None:
    """Production refuses to run if its database role could bypass row-level security.

    The one network call in the factory, on purpose: `gunicorn wsgi:app` without `-c`, a Celery
    worker and every `flask` command build the app here, so this is the place none of them skips.
    """
    from nyxcore.dbroles import assert_app_role_safe

    assert_app_role_safe(app)


def register_blueprints(app: Flask) -> None:
    """Every module of nyxcore.blueprints with a `bp`, and the top-bar entries it declares (`NAV`)."""
    import importlib
    import pkgutil

    from nyxcore import blueprints, navigation

    for info in sorted(pkgutil.iter_modules(blueprints.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{blueprints.__name__}.{info.name}")
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
            navigation.register(app, getattr(module, "NAV", ()))


def register_request_hooks(app: Flask) -> None:
    from nyxcore import input_guard, web

    input_guard.init_app(app)
    web.register_request_hooks(app)


def register_error_handlers(app: Flask) -> None:
    from nyxcore import error_pages

    error_pages.register_error_handlers(app)


def register_template_helpers(app: Flask) -> None:
    from nyxcore import templating

    templating.init_app(app)


def register_commands(app: Flask) -> None:
    from nyxcore import cli

    app.cli.add_command(cli.nyxcore)


logging.getLogger(__name__).addHandler(logging.NullHandler())
