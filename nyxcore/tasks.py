"""Celery tasks: deliver one outbox email, and sweep the outbox for mail an outage left behind.

Tasks receive ids, never content: the raw invite token never rests in Redis.
"""

from __future__ import annotations

import smtplib
import uuid
from datetime import timedelta
from typing import Any

from celery import Task
from celery.signals import worker_process_shutdown, worker_shutdown
from flask import Flask, current_app

from nyxcore import tenancy
from nyxcore.extensions import celery, db, keyring
from nyxcore.services import mail


class AppContextTask(Task):  # type: ignore[misc]
    """A task that runs inside the Flask application context (and so has db.session)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.app.flask_app.app_context():
            try:
                return self.run(*args, **kwargs)
            finally:
                db.session.remove()


def init_app(app: Flask) -> None:
    """Configure the shared Celery app from the Flask config and remember the Flask app."""
    celery.conf.update(app.config["CELERY"])
    celery.conf.task_publish_retry = False  # a broker outage must not stall a request; the sweep catches up
    celery.flask_app = app
    app.extensions["celery"] = celery


def transport() -> mail.Transport:
    """The configured mail transport, built once per app."""
    cached: mail.Transport | None = current_app.extensions.get("nyxcore_mail_transport")
    if cached is None:
        config = current_app.config
        if config["MAIL_BACKEND"] == "console":
            cached = mail.ConsoleTransport()
        else:
            cached = mail.SMTPTransport(mail_settings(config))
        current_app.extensions["nyxcore_mail_transport"] = cached
    return cached


def mail_settings(config: Any) -> mail.MailSettings:
    return mail.MailSettings(
        sender=config["MAIL_FROM"],
        host=config["SMTP_HOST"],
        port=config["SMTP_PORT"],
        username=config["SMTP_USERNAME"],
        password=config["SMTP_PASSWORD"],
        starttls=config["SMTP_STARTTLS"],
        timeout=config["SMTP_TIMEOUT"],
    )


@celery.task(  # type: ignore[untyped-decorator]
    base=AppContextTask,
    name="nyxcore.tasks.deliver_outbox_email",
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, OSError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=mail.MAX_ATTEMPTS,
)
def deliver_outbox_email(outbox_id: str) -> bool:
    """Send one outbox row (idempotent: a sent row is never sent again)."""
    message_id = uuid.UUID(outbox_id)
    with tenancy.tenant_context(outbox_id=message_id):  # RLS shows the worker this one message
        return mail.deliver(keyring.get(), transport(), current_app.config["MAIL_FROM"], message_id)


@celery.task(base=AppContextTask, name="nyxcore.tasks.sweep_outbox")  # type: ignore[untyped-decorator]
def sweep_outbox(older_than_seconds: float = 60.0) -> int:
    """Re-enqueue outbox rows left unsent (broker or SMTP outage); returns how many."""
    ids = mail.unsent_ids(older_than=timedelta(seconds=older_than_seconds))
    db.session.rollback()
    for outbox_id in ids:
        deliver_outbox_email.delay(str(outbox_id))
    return len(ids)


def close_mail_connections(**_: Any) -> None:
    """Say QUIT to the SMTP server on every pooled connection when a worker stops."""
    app = getattr(celery, "flask_app", None)
    cached = app.extensions.get("nyxcore_mail_transport") if app is not None else None
    if isinstance(cached, mail.SMTPTransport):
        cached.close_all()


worker_shutdown.connect(close_mail_connections, weak=False)
worker_process_shutdown.connect(close_mail_connections, weak=False)
