"""Gunicorn glue for `gunicorn.conf.py`: a redacting access logger and the start-up role check."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from nyxcore.logs import redact


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type information
    """Gunicorn's logger, with invite tokens and GitHub tokens masked in every access-log field.

    The access log holds the request line, path, query string and Referer; any of them can carry a
    magic-link token (`/invite/<token>`, or `next=/invite/<token>` on the sign-up page).
    """

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}


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
