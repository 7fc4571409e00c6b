"""Email through a transactional outbox.

`queue_email` writes an OutboxEmail (body sealed with the key ring) in the caller's transaction
and remembers its id on the session. Only after that transaction commits does `dispatch_queued`
hand the ids (never the content) to Celery, DELIVERY_BATCH to a task. The worker's `deliver`
claims one row, decrypts, sends, marks it sent and wipes the body, in a transaction of its own
for each message on the task's one connection (`delivery_connection`); the beat sweep re-enqueues
what an outage left behind.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import DateTime, Integer, LargeBinary, Row, String, Uuid, bindparam, or_, select, text, update
from sqlalchemy.engine import Connection

from nyxcore.crypto import DecryptionError, KeyRing, Sealed
from nyxcore.extensions import db
from nyxcore.models import OutboxEmail
from nyxcore.services.mail_failures import FailureKind, failure_kind
from nyxcore.services.mail_messages import render

# The transports moved to their own module; these names stay importable from here.
from nyxcore.services.mail_transports import ConsoleTransport as ConsoleTransport
from nyxcore.services.mail_transports import MailSettings as MailSettings
from nyxcore.services.mail_transports import SMTPTransport as SMTPTransport
from nyxcore.services.mail_transports import Transport as Transport
from nyxcore.services.mail_transports import console_mail_for as console_mail_for

log = logging.getLogger("nyxcore.mail")
_QUEUED = "nyxcore_queued_outbox_ids"
MAX_ATTEMPTS = 12
# Defined in tasks.py, which imports this module: one message (its retries), and several in turn.
DELIVER_TASK = "nyxcore.tasks.deliver_outbox_email"
DELIVER_BATCH_TASK = "nyxcore.tasks.deliver_outbox_emails"
# Messages per delivery task. One task per message cost the worker more CPU in Celery's handling than
# in the delivery itself (issue 15); a few tasks per request's batch still spread over the worker's
# processes.
DELIVERY_BATCH = 10


def seal_context(outbox_id: uuid.UUID) -> str:
    return f"outbox:{outbox_id}"


def queue_email(
    ring: KeyRing, *, tenant_id: uuid.UUID | None, to: str, subject: str, text_body: str, html_body: str
) -> OutboxEmail:
    """Add a message sent for team `tenant_id` (None: account mail, for no team) to the outbox in this
    transaction; enqueued after commit."""
    # Every column is given here, none left to a server default: an INSERT that had to read its
    # defaults back (RETURNING) would need to see the row, and account mail is insert-only under RLS.
    outbox = OutboxEmail(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        to_address=to,
        subject=subject,
        attempts=0,
        created_at=datetime.now(UTC),
    )
    body = json.dumps({"text": text_body, "html": html_body}).encode()
    sealed = ring.encrypt(body, seal_context(outbox.id))
    outbox.key_id, outbox.nonce, outbox.body_ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    db.session.add(outbox)
    db.session.info.setdefault(_QUEUED, []).append(outbox.id)
    return outbox


def dispatch_queued() -> None:
    """Enqueue delivery of the outbox rows this session committed. A broker outage only delays them."""
    enqueue_deliveries(db.session.info.pop(_QUEUED, []))


def enqueue_deliveries(outbox_ids: list[uuid.UUID]) -> None:
    """Hand outbox ids (never content) to Celery, DELIVERY_BATCH to a task; a broker outage is logged
    and left to the sweep."""
    if not outbox_ids:
        return
    # Looked up by name on this app's Celery (tasks.celery_init_app), so mail imports no tasks.
    deliver_outbox_emails = current_app.extensions["celery"].tasks[DELIVER_BATCH_TASK]
    for start in range(0, len(outbox_ids), DELIVERY_BATCH):
        batch = [str(outbox_id) for outbox_id in outbox_ids[start : start + DELIVERY_BATCH]]
        try:
            deliver_outbox_emails.delay(batch)
        except Exception as exc:  # the sweep will pick the rows up; the user's action still succeeded
            log.warning(
                "could not enqueue %d outbox email(s) (%s); the sweep will retry", len(batch), type(exc).__name__
            )


def discard_queued() -> None:
    """Forget queued ids after a rollback: their rows no longer exist."""
    db.session.info.pop(_QUEUED, None)


def unqueue(outbox_id: uuid.UUID | None) -> None:
    """Forget one queued id whose row a rolled-back savepoint took back."""
    queued: list[uuid.UUID] = db.session.info.get(_QUEUED, [])
    if outbox_id in queued:
        queued.remove(outbox_id)


def cancel_unsent(outbox_id: uuid.UUID, reason: str) -> bool:
    """Wipe an outbox row's body so it is never sent, unless it was sent already or is being sent now.

    Returns True when the message was cancelled. Flushes nothing; the caller's transaction decides.
    """
    outbox = db.session.scalar(
        select(OutboxEmail)
        .where(OutboxEmail.id == outbox_id, OutboxEmail.sent_at.is_(None))
        .with_for_update(skip_locked=True)  # a worker holding it is sending it: let it finish
    )
    if outbox is None or outbox.body_ciphertext is None:
        return False
    outbox.key_id = outbox.nonce = outbox.body_ciphertext = None
    outbox.last_error = reason[:500]
    return True


# A delivery's statements, built once: building them anew for every message cost the worker more CPU
# than PostgreSQL spends running them. _LOCK_UNSENT locks an unsent row (skipping one that another
# worker holds: it is sending it) and returns what it holds; _MARK_SENT marks it sent and wipes the
# body (SQLite runs these two).
_UNSENT = (
    OutboxEmail.id == bindparam("outbox_id", type_=Uuid),
    OutboxEmail.sent_at.is_(None),
    OutboxEmail.body_ciphertext.is_not(None),
    OutboxEmail.nonce.is_not(None),
    OutboxEmail.key_id.is_not(None),
    OutboxEmail.attempts < MAX_ATTEMPTS,  # given up on: a retry scheduled earlier finds nothing to do
)
_CONTENT = (
    OutboxEmail.attempts,  # as they were before this attempt
    OutboxEmail.to_address,
    OutboxEmail.subject,
    OutboxEmail.key_id,
    OutboxEmail.nonce,
    OutboxEmail.body_ciphertext,
)
_LOCK_UNSENT = select(*_CONTENT).where(*_UNSENT).with_for_update(skip_locked=True)
_MARK_SENT = (
    update(OutboxEmail)
    .where(OutboxEmail.id == bindparam("outbox_id", type_=Uuid))
    .values(
        attempts=OutboxEmail.attempts + 1,
        sent_at=bindparam("sent_at", type_=DateTime(timezone=True)),
        last_error=None,
        failure=None,
        retry_at=None,
        key_id=None,
        nonce=None,
        body_ciphertext=None,
    )
    .execution_options(synchronize_session=False)
)
# PostgreSQL: both in one call of `nyxcore_claim_outbox` (migration 0022), whose two statements are
# planned once per connection; a statement of its own was planned for every message, with the outbox
# policies in it. It is SECURITY INVOKER: the same policies hold inside.
_CLAIM = (
    text("SELECT * FROM nyxcore_claim_outbox(:outbox_id, :sent_at, :max_attempts)")
    .bindparams(
        bindparam("outbox_id", type_=Uuid),
        bindparam("sent_at", type_=DateTime(timezone=True)),
        bindparam("max_attempts", type_=Integer, value=MAX_ATTEMPTS),
    )
    .columns(*(column.expression for column in _CONTENT))  # typed as the model's: bytes, not memoryview
)


@contextmanager
def delivery_connection() -> Iterator[Connection]:
    """A connection for a run of deliveries, each of which begins and commits a transaction of its own.

    One connection for the run: a session checked a connection out of the pool and back for every
    message, and its commit machinery cost more than the COMMIT itself (issue 15). When the session is
    bound to one connection (the tests' outer transaction), that one, and each delivery is a savepoint.
    """
    bind = db.session.get_bind()
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as connection:
        yield connection


def _claim(connection: Connection, outbox_id: uuid.UUID) -> Row[Any] | None:
    """Lock an unsent row, mark it sent and wipe its body in this transaction; return its content.

    None if it was sent or cancelled, or another worker holds it. Commit once the message is
    sent; roll back to put the row back as it was.
    """
    params = {"outbox_id": outbox_id, "sent_at": datetime.now(UTC)}
    if connection.dialect.name == "postgresql":
        return connection.execute(_CLAIM, params).one_or_none()
    outbox = connection.execute(_LOCK_UNSENT, params).one_or_none()
    if outbox is not None:
        connection.execute(_MARK_SENT, params)
    return outbox


# A failed attempt, noted on the row the claim still holds locked: unsent again (body put back, unless
# it was given up on), its attempts, the kind of failure and when the next try is due. The row is never
# unlocked between the claim and this, so no other worker's attempt slips in between.
_RELEASE = (
    update(OutboxEmail)
    .where(OutboxEmail.id == bindparam("outbox_id", type_=Uuid))
    .values(
        sent_at=None,
        attempts=bindparam("attempts", type_=Integer),
        failure=bindparam("failure", type_=String),
        retry_at=bindparam("retry_at", type_=DateTime(timezone=True)),
        key_id=bindparam("key_id", type_=String),
        nonce=bindparam("nonce", type_=LargeBinary),
        body_ciphertext=bindparam("body_ciphertext", type_=LargeBinary),
    )
    .execution_options(synchronize_session=False)
)


def given_up(attempts: int, has_body: bool) -> bool:
    """An unsent message is given up on (never tried again) once its attempts are used up or its body
    is wiped: the row's state alone says so, as the sweep reads it."""
    return attempts >= MAX_ATTEMPTS or not has_body


def _release(
    connection: Connection,
    outbox_id: uuid.UUID,
    outbox: Row[Any],
    attempts: int,
    kind: FailureKind,
    retry_at: datetime | None,
) -> bool:
    """Note a failed attempt on the claimed row (the caller commits); True when the message is given up on.

    Given up (a permanent failure, or the last attempt), the body is wiped and no retry is due.
    """
    give_up = kind.permanent or attempts >= MAX_ATTEMPTS
    keep = not give_up or kind is FailureKind.UNREADABLE  # an unreadable body stays, for an operator
    connection.execute(
        _RELEASE,
        {
            "outbox_id": outbox_id,
            "attempts": attempts,
            "failure": kind.value,
            "retry_at": None if give_up else retry_at,
            "key_id": outbox.key_id if keep else None,
            "nonce": outbox.nonce if keep else None,
            "body_ciphertext": outbox.body_ciphertext if keep else None,
        },
    )
    return give_up


def deliver(
    connection: Connection,
    ring: KeyRing,
    transport: Transport,
    sender: str,
    outbox_id: uuid.UUID,
    retry_at: datetime | None = None,
) -> bool:
    """Send one outbox row unless it was sent already, given up on, or another worker holds it, in a
    transaction of its own on `connection` (see `delivery_connection`), which it commits.

    Run it in the message's own context (`tenant_context(outbox_id=...)`): row-level security shows
    a worker that one row and no other.

    Returns True when this call sent it. A transient failure is recorded with `retry_at` (when the
    caller will try again) and re-raised, so the task can retry; a permanent one (the server refused
    the address or the message), or the row's MAX_ATTEMPTS-th, is recorded as given up and not raised.
    The attempts are counted on the row, so this holds whichever path (retry or sweep) tried it.
    """
    # The row stays locked until this transaction ends, so no other worker (nor a revoke) takes it
    # while its message is being sent. On PostgreSQL a sent message costs two statements: the claim,
    # and COMMIT once the SMTP server has accepted it. Anything unforeseen rolls the claim back.
    transaction = connection.begin_nested() if connection.in_transaction() else connection.begin()
    with transaction:
        outbox = _claim(connection, outbox_id)
        if outbox is None:
            transaction.rollback()
            return False
        try:
            sealed = Sealed(outbox.key_id, outbox.nonce, outbox.body_ciphertext)
            body = json.loads(ring.decrypt(sealed, seal_context(outbox_id)))
            message = render(outbox_id, outbox.to_address, outbox.subject, sender, body["text"], body["html"])
            transport.send(message)
        except DecryptionError:
            # It will never decrypt: stop retrying (its attempts used up).
            _release(connection, outbox_id, outbox, MAX_ATTEMPTS, FailureKind.UNREADABLE, None)
            transaction.commit()
            log.error("outbox email %s cannot be decrypted", outbox_id)
            return False
        except Exception as exc:
            kind = failure_kind(exc)
            log.warning("outbox email %s not delivered: %s (%s)", outbox_id, kind.value, type(exc).__name__)
            given_up_now = _release(connection, outbox_id, outbox, outbox.attempts + 1, kind, retry_at)
            transaction.commit()
            if given_up_now:
                return False
            raise
        transaction.commit()
    return True


def unsent_ids(*, older_than: timedelta, limit: int = 500) -> list[uuid.UUID]:
    """Outbox rows still unsent after `older_than`, not given up on, and with no retry scheduled (or
    one overdue by `older_than`: lost with its worker), oldest first.

    Across every team, so on PostgreSQL through `nyxcore_unsent_outbox` (migrations 0004, 0016), a
    SECURITY DEFINER function that returns ids and nothing else.
    """
    cutoff = datetime.now(UTC) - older_than
    if db.session.get_bind().dialect.name == "postgresql":
        rows = db.session.execute(
            text("SELECT * FROM nyxcore_unsent_outbox(:cutoff, :attempts, :limit)"),
            {"cutoff": cutoff, "attempts": MAX_ATTEMPTS, "limit": limit},
        )
        return [uuid.UUID(str(outbox_id)) for (outbox_id,) in rows]
    return list(
        db.session.scalars(
            select(OutboxEmail.id)
            .where(
                OutboxEmail.sent_at.is_(None),
                OutboxEmail.created_at < cutoff,
                OutboxEmail.attempts < MAX_ATTEMPTS,
                OutboxEmail.body_ciphertext.is_not(None),
                # A retry is scheduled (not yet overdue by `older_than`): the sweep must not start another.
                or_(OutboxEmail.retry_at.is_(None), OutboxEmail.retry_at < cutoff),
            )
            .order_by(OutboxEmail.created_at)
            .limit(limit)
        )
    )
