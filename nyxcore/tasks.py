"""Celery, set up as Flask's own Celery example does, and the tasks: deliver outbox email (a batch
of messages, or one message and its retries), sweep the outbox for mail an outage left behind, remind invitees 48 hours before expiry, and warn
about and end memberships that end.

`celery_init_app` makes one Celery app per Flask app (`app.extensions["celery"]`); the tasks are
`@shared_task`s, so each Celery app gets them with its own `FlaskTask` base. Tasks receive ids,
never content: the raw invite token never rests in Redis.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task, shared_task
from celery import current_app as current_celery_app
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_shutdown, worker_shutdown
from celery.utils.time import get_exponential_backoff_interval
from flask import Flask, current_app
from sqlalchemy.engine import Connection

from nyxcore import tenancy
from nyxcore.extensions import db, keyring
from nyxcore.services import endings, invitations, mail
from nyxcore.services.mail_failures import FailureKind, failure_kind

log = logging.getLogger("nyxcore.tasks")


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for `app` from its CELERY config, as `app.extensions["celery"]`."""

    class FlaskTask(Task):  # type: ignore[misc]
        """A task that runs inside the Flask application context (and so has db.session)."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            # The task's own entry point to the tenant context: it starts empty, never inherited
            # from the caller (an eager task runs inside a request), and is restored afterwards.
            # This is where the task's Actor will be set.
            with app.app_context(), tenancy.tenant_context():
                try:
                    return self.run(*args, **kwargs)
                finally:
                    db.session.remove()

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.conf.task_publish_retry = False  # a broker outage must not stall a request; the sweep catches up
    celery_app.set_default()
    celery_app.flask_app = app  # for close_mail_connections, when the worker stops
    app.extensions["celery"] = celery_app
    return celery_app


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


# Retries back off exponentially (factor 2 s, full jitter, at most 10 minutes), as Celery's
# autoretry would; computed here so that the outbox row can say when the next try is due.
RETRY_BACKOFF, RETRY_BACKOFF_MAX = 2, 600


def _next_try(retries: int) -> tuple[float, datetime | None]:
    """The countdown to the retry after try number `retries` (0: the first) fails, and when that retry is
    due (None: that was the last try)."""
    countdown = get_exponential_backoff_interval(RETRY_BACKOFF, retries, RETRY_BACKOFF_MAX, full_jitter=True)
    retry_at = datetime.now(UTC) + timedelta(seconds=countdown) if retries < mail.MAX_ATTEMPTS else None
    return countdown, retry_at


def _deliver(connection: Connection, outbox_id: uuid.UUID, retry_at: datetime | None) -> bool:
    """mail.deliver for one row, in the message's own context: RLS shows the worker that one message."""
    with tenancy.tenant_context(outbox_id=outbox_id):
        return mail.deliver(
            connection, keyring.get(), transport(), current_app.config["MAIL_FROM"], outbox_id, retry_at
        )


@shared_task(  # type: ignore[untyped-decorator]
    name=mail.DELIVER_TASK,  # "nyxcore.tasks.deliver_outbox_email"
    bind=True,
    acks_late=True,
    max_retries=mail.MAX_ATTEMPTS,
)
def deliver_outbox_email(self: Task, outbox_id: str) -> bool:
    """Send one outbox row (idempotent: a sent row is never sent again); retry a transient failure."""
    retries: int = self.request.retries
    countdown, retry_at = _next_try(retries)
    try:
        with mail.delivery_connection() as connection:
            return _deliver(connection, uuid.UUID(outbox_id), retry_at)
    except (smtplib.SMTPException, OSError) as exc:
        if retry_at is None:
            raise
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name=mail.DELIVER_BATCH_TASK, acks_late=True)  # type: ignore[untyped-decorator]
def deliver_outbox_emails(outbox_ids: list[str]) -> int:
    """Send several outbox rows in turn over this process's SMTP connection; returns how many it sent.

    Each row is claimed, sent and committed on its own, as `deliver_outbox_email` does, so a crash
    mid-batch can duplicate at most the message in flight, as before: the task is acknowledged only
    once it ran, so it runs again and skips what was sent. A message that fails (its attempt recorded)
    goes on as its own `deliver_outbox_email` retry chain and the others go on here; once the server
    is unreachable, the rest go on as one task each instead of each waiting for it here in turn. Any
    other error is one message's: it is logged, and the batch goes on.
    """
    one = current_app.extensions["celery"].tasks[mail.DELIVER_TASK]
    sent = 0
    with mail.delivery_connection() as connection:
        for position, outbox_id in enumerate(outbox_ids):
            countdown, retry_at = _next_try(0)
            try:
                sent += _deliver(connection, uuid.UUID(outbox_id), retry_at)
            except (smtplib.SMTPException, OSError) as exc:
                _hand_on(one, outbox_id, countdown=countdown, retries=1)  # as its first retry
                if failure_kind(exc) is FailureKind.UNREACHABLE:
                    for rest in outbox_ids[position + 1 :]:
                        _hand_on(one, rest)
                    break
            except SoftTimeLimitExceeded:  # an operator's time limit ends the batch, not one message
                raise
            except Exception as exc:  # not the transport's (a message that cannot be rendered, say)
                # Its attempt is recorded (or its claim rolled back), as a single task's is; like that task
                # it gets no retry chain and is left to the sweep. It must not cost the rest of the batch
                # their delivery.
                log.warning("outbox email %s failed (%s); its batch goes on", outbox_id, type(exc).__name__)
    return sent


def _hand_on(task: Task, outbox_id: str, **options: Any) -> None:
    """Enqueue one message's own delivery task; a broker outage leaves it to the sweep."""
    try:
        task.apply_async((outbox_id,), **options)
    except Exception as exc:
        log.warning("could not enqueue outbox email %s (%s); the sweep will retry", outbox_id, type(exc).__name__)


@shared_task(name="nyxcore.tasks.sweep_outbox")  # type: ignore[untyped-decorator]
def sweep_outbox(older_than_seconds: float = 60.0) -> int:
    """Re-enqueue outbox rows left unsent (broker or SMTP outage); returns how many."""
    ids = mail.unsent_ids(older_than=timedelta(seconds=older_than_seconds))
    db.session.rollback()
    mail.enqueue_deliveries(ids)
    return len(ids)


@shared_task(name="nyxcore.tasks.remind_expiring_invitations")  # type: ignore[untyped-decorator]
def remind_expiring_invitations() -> int:
    """Send the one reminder 48 hours before expiry of every invitation due one; returns how many.

    Safe in any number of beat and worker processes at once, and across restarts: each reminder is
    claimed by an atomic UPDATE (invitations.remind), committed with its outbox row, then dispatched.
    """
    due = [(reminder.tenant_id, reminder.invitation_id) for reminder in invitations.due_reminders()]
    return _in_each_team(due, _remind)


def _remind(tenant_id: uuid.UUID, invitation_id: uuid.UUID) -> bool:
    """Claim and queue one invitation's reminder; False when it was not due any more."""
    return invitations.remind(invitation_id) is not None


@shared_task(name="nyxcore.tasks.warn_ending_memberships")  # type: ignore[untyped-decorator]
def warn_ending_memberships() -> int:
    """Mail each member whose membership ends within a week, once; returns how many were warned."""
    return _in_each_team(endings.due_for_warning(), endings.warn)


@shared_task(name="nyxcore.tasks.end_memberships")  # type: ignore[untyped-decorator]
def end_memberships() -> int:
    """Remove the memberships past their end date; returns how many this run removed."""
    return _in_each_team(endings.due_for_ending(), endings.end)


def _in_each_team(due: list[tuple[uuid.UUID, uuid.UUID]], act: Callable[[uuid.UUID, uuid.UUID], bool]) -> int:
    """`act(team, row id)` for each due pair (a membership, an invitation), as the system in that team's
    context, one commit each; returns how many acted.

    One that fails is rolled back and logged; the others go on, and the next run tries it again.
    """
    db.session.rollback()  # the listing ran with no team: each pair gets a transaction of its own
    done = 0
    for tenant_id, row_id in due:
        with tenancy.tenant_context(tenant_id=tenant_id):
            try:
                done += bool(act(tenant_id, row_id))
                db.session.commit()
            except Exception:
                db.session.rollback()
                mail.discard_queued()
                log.exception("%s of %s in team %s failed", act.__name__, row_id, tenant_id)
                continue
        mail.dispatch_queued()  # after the commit: the ids only
    return done


def close_mail_connections(**_: Any) -> None:
    """Say QUIT to the SMTP server on every pooled connection when a worker stops."""
    app = getattr(current_celery_app, "flask_app", None)
    cached = app.extensions.get("nyxcore_mail_transport") if app is not None else None
    if isinstance(cached, mail.SMTPTransport):
        cached.close_all()


worker_shutdown.connect(close_mail_connections, weak=False)
worker_process_shutdown.connect(close_mail_connections, weak=False)
