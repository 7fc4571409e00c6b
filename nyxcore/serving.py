"""Gunicorn glue for `gunicorn.conf.py`: a redacting access logger and the start-up role check."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from nyxcore.logs import redact

_ATOM = re.compile(r"%\(([^)]+)\)")
# What gunicorn's own atoms read from the WSGI environ; the rest only feeds `%({name}e)s` atoms.
_ENVIRON_KEYS = (
    "REMOTE_ADDR",
    "REQUEST_METHOD",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "PATH_INFO",
    "QUERY_STRING",
    "HTTP_REFERER",
    "HTTP_USER_AGENT",
    "HTTP_AUTHORIZATION",
)


@lru_cache(maxsize=8)
def format_atoms(log_format: str) -> tuple[str, ...]:
    """The atoms `log_format` uses, as gunicorn's atoms name them (header and environ names lower-case)."""
    return tuple(dict.fromkeys(a.lower() if a.startswith("{") else a for a in _ATOM.findall(log_format)))


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type information
    """Gunicorn's logger, with invite tokens and GitHub tokens masked in every access-log field.

    The access log holds the request line, path, query string and Referer; any of them can carry a
    magic-link token (`/invite/<token>`, or `next=/invite/<token>` on the sign-up page). Only the
    atoms the log format uses are made and redacted: every request pays for this.
    """

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        wanted = format_atoms(self.cfg.access_log_format)
        if not any(atom.endswith("}e") for atom in wanted):
            environ = {key: environ[key] for key in _ENVIRON_KEYS if key in environ}
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        picked = {key: atoms[key] for key in wanted if key in atoms}
        return {key: redact(value) if isinstance(value, str) else value for key, value in picked.items()}


def refuse_unsafe_database_role(server: Any) -> None:
    """Gunicorn `on_starting` hook: in production, stop before serving if the app role can bypass RLS.

    Runs once, in the master, before any worker exists: building the app runs the check
    (`create_app` refuses an unsafe role in production), so a bad role stops gunicorn before it
    forks instead of failing every worker's boot. A ConfigError (a RuntimeError) makes gunicorn
    print it and exit with status 1.
    """
    from nyxcore import create_app

    app = create_app()
    if app.config["NYXCORE_ENV"] == "production":
        server.log.info("The app database role is subject to row-level security.")
