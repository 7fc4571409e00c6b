"""NyxCore: self-hosted team management for multi-tenant SaaS."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from nyxcore.config import check_production, load_config

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with `config` overriding (tests pass theirs here)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(instance_path=app.instance_path))
    if config:
        app.config.from_mapping(config)
    check_production(app.config)
    configure_logging(app)
    register_proxy(app)
    register_extensions(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_error_handlers(app)
    register_template_helpers(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    from nyxcore.logs import configure

    configure(app)


def register_proxy(app: Flask) -> None:
    c = app.config
    if any(c[k] for k in ("PROXY_FIX_X_FOR", "PROXY_FIX_X_PROTO", "PROXY_FIX_X_HOST", "PROXY_FIX_X_PREFIX")):
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=c["PROXY_FIX_X_FOR"],
            x_proto=c["PROXY_FIX_X_PROTO"],
            x_host=c["PROXY_FIX_X_HOST"],
            x_prefix=c["PROXY_FIX_X_PREFIX"],
        )


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
    keyring.init_app(app)
    tasks.init_app(app)
    with app.app_context():
        database.configure_engine(db.engine)
    tenancy.install_orm_scoping()


def register_blueprints(app: Flask) -> None:
    from nyxcore.blueprints import api, auth, github, invite, main, notes, team, teams

    for blueprint in (main.bp, auth.bp, teams.bp, team.bp, invite.bp, notes.bp, github.bp, api.bp):
        app.register_blueprint(blueprint)


def register_request_hooks(app: Flask) -> None:
    from nyxcore import input_guard, web

    input_guard.init_app(app)
    web.register_request_hooks(app)


def register_error_handlers(app: Flask) -> None:
    from nyxcore import web

    web.register_error_handlers(app)


def register_template_helpers(app: Flask) -> None:
    from nyxcore import templating

    templating.init_app(app)


def register_commands(app: Flask) -> None:
    from nyxcore import cli

    app.cli.add_command(cli.nyxcore)


logging.getLogger(__name__).addHandler(logging.NullHandler())
