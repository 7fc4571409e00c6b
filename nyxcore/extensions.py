"""Extension instances, created unbound here and bound to the app in create_app."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from nyxcore.config import ConfigError
from nyxcore.crypto import KeyRing, KeyRingError
from nyxcore.models import Base

# Models live on a plain typed DeclarativeBase (no Flask in models.py); the extension shares its metadata.
db = SQLAlchemy(metadata=Base.metadata)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def configured_limit(setting: str) -> Callable[[], str]:
    """A Flask-Limiter limit read from the app's config on each request (`RATELIMIT_LOGIN`, ...)."""

    def limit() -> str:
        value: str = current_app.config[setting]
        return value

    return limit


def per_account() -> str:
    """A rate-limit key: the signed-in account rather than the client's address."""
    return f"account:{current_user.get_id()}"


class KeyRingHolder:
    """The operator's key ring, parsed once from NYXCORE_ENCRYPTION_KEYS when the app is created."""

    def init_app(self, app: Flask) -> None:
        try:
            ring = KeyRing.parse(app.config["NYXCORE_ENCRYPTION_KEYS"])
        except KeyRingError as exc:
            # Name the setting: a bare "no keys given" at start-up does not say what to fix.
            raise ConfigError(f"NYXCORE_ENCRYPTION_KEYS is malformed: {exc}") from exc
        app.extensions["nyxcore_keyring"] = ring

    def get(self) -> KeyRing:
        ring: KeyRing = current_app.extensions["nyxcore_keyring"]
        return ring


keyring = KeyRingHolder()
