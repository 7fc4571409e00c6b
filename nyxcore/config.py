"""Every setting NyxCore reads from the environment, in one place.

`load_config(environ)` turns an environment mapping into Flask configuration. An unset
`NYXCORE_ENV` means production: only `make run` and the tests choose development or testing, so a
server started by hand never runs on the published development keys. Development and testing have
safe defaults; production refuses to start on anything unsafe (`ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from nyxcore.crypto import KeyRing, KeyRingError

ENVIRONMENTS = ("development", "testing", "production")
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105 (refused in production)
# A fixed, published key so that `make run` works with nothing configured. Never valid in production.
DEV_ENCRYPTION_KEYS = "dev:ZGV2LW9ubHkta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE="
DEFAULT_APP_ROLE = "nyxcore_app"


class ConfigError(RuntimeError):
    """The environment describes a configuration NyxCore refuses to run with."""


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from exc


def default_sqlite_url(instance_path: str) -> str:
    """The embedded development database under the instance folder."""
    return "sqlite:///" + str(Path(instance_path) / "nyxcore.db")


def load_config(
    environ: Mapping[str, str] | None = None, *, instance_path: str = "instance"
) -> dict[str, Any]:
    """Read the operator contract from `environ` (default: os.environ) into a Flask config dict."""
    env = dict(os.environ if environ is None else environ)
    mode = env.get("NYXCORE_ENV") or "production"
    if mode not in ENVIRONMENTS:
        raise ConfigError(f"NYXCORE_ENV must be one of {', '.join(ENVIRONMENTS)}, not {mode!r}")
    production = mode == "production"

    database_url = env.get("DATABASE_URL") or ("" if production else default_sqlite_url(instance_path))
    redis_url = env.get("REDIS_URL", "")
    eager = _bool(env.get("CELERY_TASK_ALWAYS_EAGER"), default=not redis_url and not production)

    return {
        "NYXCORE_ENV": mode,
        "DEBUG": False,
        "TESTING": mode == "testing",
        "SECRET_KEY": env.get("SECRET_KEY") or ("" if production else DEV_SECRET_KEY),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "MIGRATION_DATABASE_URL": env.get("MIGRATION_DATABASE_URL") or database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, env),
        "DATABASE_PING_IDLE_SECONDS": _int(env, "DATABASE_PING_IDLE_SECONDS", 10),
        "NYXCORE_APP_ROLE": env.get("NYXCORE_APP_ROLE", DEFAULT_APP_ROLE),
        "REDIS_URL": redis_url,
        "PUBLIC_URL": env.get("PUBLIC_URL", "http://127.0.0.1:5000").rstrip("/"),
        "NYXCORE_ENCRYPTION_KEYS": env.get("NYXCORE_ENCRYPTION_KEYS")
        or ("" if production else DEV_ENCRYPTION_KEYS),
        **_mail_settings(env, production),
        "GITHUB_API_URL": env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        "GITHUB_TIMEOUT": _int(env, "GITHUB_TIMEOUT", 10),
        "INVITATION_TTL": timedelta(days=_int(env, "INVITATION_TTL_DAYS", 7)),
        "INVITATIONS_PER_TEAM_PER_HOUR": _int(env, "INVITATIONS_PER_TEAM_PER_HOUR", 200),
        "PASSWORD_MIN_LENGTH": _int(env, "PASSWORD_MIN_LENGTH", 12),
        # Account links (services/account_tokens.py): how long each kind works.
        "PASSWORD_RESET_TTL": timedelta(minutes=_int(env, "PASSWORD_RESET_TTL_MINUTES", 60)),
        "EMAIL_VERIFICATION_TTL": timedelta(hours=_int(env, "EMAIL_VERIFICATION_TTL_HOURS", 48)),
        "EMAIL_CHANGE_TTL": timedelta(hours=_int(env, "EMAIL_CHANGE_TTL_HOURS", 24)),
        **_proxy_settings(env, production),
        **_rate_limit_settings(env, mode, redis_url),
        **_session_settings(env, production),
        # /dev/outbox: only ever in development (never in production, whatever this says).
        "SHOW_DEV_OUTBOX": mode == "development",
        "CELERY": _celery_settings(env, redis_url, eager),
        **_quota_settings(env),
        **_domain_settings(env),
    }


def _mail_settings(env: Mapping[str, str], production: bool) -> dict[str, Any]:
    """Mail: SMTP in production or when SMTP_HOST is set, else the console (development).

    The console prints every message, reset and magic links included, to stdout: production uses it
    only when MAIL_BACKEND says so, never for a forgotten SMTP_HOST.
    """
    smtp = production or bool(env.get("SMTP_HOST"))
    return {
        "MAIL_BACKEND": env.get("MAIL_BACKEND", "smtp" if smtp else "console"),
        "SMTP_HOST": env.get("SMTP_HOST", "localhost"),
        "SMTP_PORT": _int(env, "SMTP_PORT", 25),
        "SMTP_USERNAME": env.get("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": _bool(env.get("SMTP_STARTTLS"), default=False),
        "SMTP_TIMEOUT": _int(env, "SMTP_TIMEOUT", 10),
        "MAIL_FROM": env.get("MAIL_FROM", "NyxCore <no-reply@localhost>"),
    }


def _domain_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Verified domains (services/team_domains.py): the DNS resolver asked, and how often."""
    return {
        # "host:port" (or "host") of the nameserver to ask for TXT records; empty: the system's.
        "DNS_RESOLVER": env.get("DNS_RESOLVER", "").strip(),
        "DNS_TIMEOUT_SECONDS": _int(env, "DNS_TIMEOUT_SECONDS", 5),
        # A domain's record is looked up at most once in this many seconds (the "Check now" button).
        "DOMAIN_CHECK_INTERVAL_SECONDS": _int(env, "DOMAIN_CHECK_INTERVAL_SECONDS", 30),
    }


def _proxy_settings(env: Mapping[str, str], production: bool) -> dict[str, Any]:
    """Which forwarded headers to believe, and from whom; the request size cap."""
    return {
        # Only these peers (nginx) may set X-Forwarded-*; anyone else is taken at their socket address.
        "TRUSTED_PROXIES": env.get("TRUSTED_PROXIES", "127.0.0.1"),
        # Bodies over this answer 413 before they are read (nginx has the same cap).
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 1024 * 1024),
        "PROXY_FIX_X_FOR": _int(env, "PROXY_FIX_X_FOR", 1 if production else 0),
        "PROXY_FIX_X_PROTO": _int(env, "PROXY_FIX_X_PROTO", 1 if production else 0),
        "PROXY_FIX_X_HOST": _int(env, "PROXY_FIX_X_HOST", 0),
        "PROXY_FIX_X_PREFIX": _int(env, "PROXY_FIX_X_PREFIX", 0),
    }


def _rate_limit_settings(env: Mapping[str, str], mode: str, redis_url: str) -> dict[str, Any]:
    """Flask-Limiter: shared through Redis, counting in memory while Redis is down."""
    return {
        "RATELIMIT_ENABLED": _bool(env.get("RATELIMIT_ENABLED"), default=mode != "testing"),
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI") or redis_url or "memory://",
        # Lets two deployments (or a test run) share one Redis without sharing rate-limit counters.
        "RATELIMIT_KEY_PREFIX": env.get("RATELIMIT_KEY_PREFIX", "nyxcore"),
        "RATELIMIT_LOGIN": env.get("RATELIMIT_LOGIN", "10 per minute;50 per hour"),
        "RATELIMIT_SIGNUP": env.get("RATELIMIT_SIGNUP", "10 per hour"),
        "RATELIMIT_MAGIC_LINK": env.get("RATELIMIT_MAGIC_LINK", "30 per minute"),
        "RATELIMIT_TWO_FACTOR": env.get("RATELIMIT_TWO_FACTOR", "10 per minute;50 per hour"),
        # Asking for a reset link, per client; each address also has a silent hourly cap (migration 0008).
        "RATELIMIT_PASSWORD_RESET": env.get("RATELIMIT_PASSWORD_RESET", "5 per minute;20 per hour"),
        # Asking for a new verification link, per account.
        "RATELIMIT_VERIFY_RESEND": env.get("RATELIMIT_VERIFY_RESEND", "3 per hour"),
        # Asking to change one's address (it checks the password), per account.
        "RATELIMIT_EMAIL_CHANGE": env.get("RATELIMIT_EMAIL_CHANGE", "5 per hour"),
        "RATELIMIT_HEADERS_ENABLED": True,
        # A Redis outage must not turn log in or a magic link into a 500: count in memory meanwhile.
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    }


def _session_settings(env: Mapping[str, str], production: bool) -> dict[str, Any]:
    """Session and remember-me cookies, and how long a server-side session lives."""
    return {
        "SESSION_COOKIE_SECURE": _bool(env.get("SESSION_COOKIE_SECURE"), default=production),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": _bool(env.get("SESSION_COOKIE_SECURE"), default=production),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        # A session lives on the server (user_sessions): it ends at logout, after SESSION_IDLE_MINUTES
        # without a request, or SESSION_LIFETIME_HOURS after log in, whichever comes first. The cookie
        # only names it, so it is not re-signed on every response.
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=_int(env, "SESSION_LIFETIME_HOURS", 24 * 14)),
        "SESSION_IDLE_TIMEOUT": timedelta(minutes=_int(env, "SESSION_IDLE_MINUTES", 12 * 60)),
        "SESSION_REFRESH_EACH_REQUEST": False,
        "WTF_CSRF_TIME_LIMIT": None,
    }


# max_retries/interval_*: publishing while Redis is down gives up after about 0.3 s (the mail is in
# the outbox; the sweep enqueues it later) rather than holding the page for 6 s.
BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.2,
    # No copy of a taken task kept in Redis for redelivery an hour later: the outbox sweep re-sends
    # what a dead worker held (OUTBOX_SWEEP_AGE_SECONDS), and with it on, kombu 5.7's worker died of
    # an AttributeError when Redis restarted while it held a task (tests/deployment/test_faults.py).
    "ack_emulation": False,
}


def _celery_settings(env: Mapping[str, str], redis_url: str, eager: bool) -> dict[str, Any]:
    """The CELERY mapping that tasks.celery_init_app configures Celery from."""
    return {
        "broker_url": redis_url or "memory://",
        "result_backend": None,
        "task_ignore_result": True,
        "task_always_eager": eager,
        # Web and worker must agree on it; lets two deployments (or test runs) share one Redis.
        "task_default_queue": env.get("CELERY_TASK_DEFAULT_QUEUE") or "celery",
        "task_eager_propagates": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": _int(env, "CELERY_PREFETCH_MULTIPLIER", 4),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": BROKER_TRANSPORT_OPTIONS,
        "beat_schedule": {
            "sweep-outbox": {
                "task": "nyxcore.tasks.sweep_outbox",
                "schedule": float(_int(env, "OUTBOX_SWEEP_SECONDS", 60)),
                # Mail unsent this long is enqueued again (a lost message, a killed worker).
                "kwargs": {"older_than_seconds": float(_int(env, "OUTBOX_SWEEP_AGE_SECONDS", 60))},
            },
            "remind-expiring-invitations": {
                "task": "nyxcore.tasks.remind_expiring_invitations",
                "schedule": float(_int(env, "INVITATION_REMINDER_SECONDS", 900)),
            },
            # Memberships that end (services/endings.py): requests treat them as gone at once; these
            # mail the week's warning and remove the row (audit log, notice) soon after the end.
            "warn-ending-memberships": {
                "task": "nyxcore.tasks.warn_ending_memberships",
                "schedule": float(_int(env, "MEMBERSHIP_ENDINGS_SECONDS", 300)),
            },
            "end-memberships": {
                "task": "nyxcore.tasks.end_memberships",
                "schedule": float(_int(env, "MEMBERSHIP_ENDINGS_SECONDS", 300)),
            },
        },
    }


def _quota_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The daily allowances of services/quotas.py."""
    return {
        # Daily allowances shared by every web process (services/quotas.py), so that creating teams
        # cannot multiply the per-team invitation limit. Generous for real use (a busy admin
        # onboarding a department; a consultancy setting up a few client teams), small enough that
        # the operator's sender address cannot be rented out as a spam relay.
        "TEAMS_PER_USER_PER_DAY": _int(env, "TEAMS_PER_USER_PER_DAY", 10),
        "INVITATIONS_PER_USER_PER_DAY": _int(env, "INVITATIONS_PER_USER_PER_DAY", 200),
        "INVITATIONS_PER_INSTANCE_PER_DAY": _int(env, "INVITATIONS_PER_INSTANCE_PER_DAY", 2000),
        # Notices that anyone may cause to an address with an account ("someone tried to sign up
        # with your address"): past this many a day, silently no more (the answer stays the same).
        "ACCOUNT_NOTICES_PER_ADDRESS_PER_DAY": _int(env, "ACCOUNT_NOTICES_PER_ADDRESS_PER_DAY", 5),
    }


def trusted_networks(setting: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """The networks of TRUSTED_PROXIES (comma-separated addresses or CIDR blocks; empty: none)."""
    return tuple(ip_network(part.strip()) for part in setting.split(",") if part.strip())


def _engine_options(database_url: str, env: Mapping[str, str]) -> dict[str, Any]:
    if database_url.startswith("postgresql"):
        return {
            # No SELECT 1 before every checkout: database.configure_engine pings only a connection
            # that sat idle in the pool longer than DATABASE_PING_IDLE_SECONDS.
            "pool_pre_ping": False,
            "pool_size": _int(env, "DATABASE_POOL_SIZE", 5),
            "connect_args": {"connect_timeout": _int(env, "DATABASE_CONNECT_TIMEOUT", 5)},
        }
    return {}


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse unsafe settings in production. Raises ConfigError naming what to fix."""
    if config["NYXCORE_ENV"] != "production":
        return
    problems = []
    secret = config.get("SECRET_KEY") or ""
    if not secret or secret == DEV_SECRET_KEY or len(secret) < 32:
        problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
    if not config.get("SQLALCHEMY_DATABASE_URI", "").startswith("postgresql"):
        problems.append("DATABASE_URL must point at PostgreSQL (the app role)")
    if not config.get("REDIS_URL"):
        problems.append("REDIS_URL must be set (Celery broker and rate limits)")
    keys = config.get("NYXCORE_ENCRYPTION_KEYS") or ""
    if not keys:
        problems.append(
            "NYXCORE_ENCRYPTION_KEYS must be set (generate one with `python -m nyxcore keys generate`)"
        )
    else:
        try:
            ring = KeyRing.parse(keys)
        except KeyRingError as exc:
            problems.append(f"NYXCORE_ENCRYPTION_KEYS is malformed: {exc}")
        else:
            published = KeyRing.parse(DEV_ENCRYPTION_KEYS).keys["dev"]
            if any(key == published for key in ring.keys.values()):  # whatever id it is given
                problems.append("NYXCORE_ENCRYPTION_KEYS holds the published development key")
    try:
        trusted_networks(config.get("TRUSTED_PROXIES", ""))
    except ValueError as exc:
        problems.append(f"TRUSTED_PROXIES is malformed: {exc}")
    if config.get("CELERY", {}).get("task_always_eager"):
        problems.append("CELERY_TASK_ALWAYS_EAGER must be off in production")
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems))
