"""Structured logs: one JSON object a line, with the request id, and no secrets in them."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from flask import Flask, has_request_context, request

# The WSGI environ key of the request's id, put there by NyxCoreFlask.wsgi_app (nyxcore/web.py).
REQUEST_ID = "nyxcore.request_id"

# Magic-link and join-link paths carry the raw token, also percent-encoded inside a `next=` query parameter;
# GitHub tokens have well-known prefixes.
_REDACTIONS = (
    (re.compile(r"(/invite/|/join/)[A-Za-z0-9_\-]{16,}"), r"\1[redacted]"),
    # Account links: password reset, e-mail verification, e-mail change.
    (re.compile(r"(/auth/reset/|/auth/verify/|/account/email/confirm/)[A-Za-z0-9_\-]{16,}"), r"\1[redacted]"),
    (re.compile(r"(%2Finvite%2F|%2Fjoin%2F)[A-Za-z0-9_\-]{16,}", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]{10,}"), r"\1[redacted]"),
)


def redact(text: str) -> str:
    """`text` with invite tokens and GitHub tokens masked."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in every record's rendered message and attaches the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if not hasattr(record, "request_id"):
            record.request_id = request.environ.get(REQUEST_ID, "") if has_request_context() else ""
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure(app: Flask) -> None:
    """JSON lines on stderr in production; readable lines elsewhere. Secrets redacted in both."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if app.config["NYXCORE_ENV"] == "production":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("nyxcore", "werkzeug", "celery", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        for existing in logger.filters:
            if isinstance(existing, RedactingFilter):
                break
        else:
            logger.addFilter(RedactingFilter())
    nyx = logging.getLogger("nyxcore")
    if not any(getattr(h, "_nyxcore", False) for h in nyx.handlers):
        handler._nyxcore = True  # type: ignore[attr-defined]
        nyx.addHandler(handler)
        nyx.setLevel(logging.INFO)
