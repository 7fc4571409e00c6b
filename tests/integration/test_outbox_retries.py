"""The outbox sweep and the delivery retries together: a message whose retry is scheduled is not swept
again, and a message is attempted at most MAX_ATTEMPTS times whichever path (retry, sweep) tried it.

On PostgreSQL as the app role (the sweep through `nyxcore_unsent_outbox`, deliveries in the message's
own context) and, for the sweep, on SQLite too (services/mail.py asks the same condition there).
The deliveries run the real task body against the real SMTP server of tests/integration/mailserver.py.
"""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import update
from sqlalchemy.engine import Engine

from nyxcore import create_app, tenancy
from nyxcore.config import load_config
from nyxcore.extensions import db, keyring
from nyxcore.models import OutboxEmail
from nyxcore.services import mail
from tests.helpers import dicts
from tests.integration.mailserver import MailServer

SWEEP_AGE = timedelta(seconds=60)  # OUTBOX_SWEEP_AGE_SECONDS' default


def queue(app: Flask, to: str) -> uuid.UUID:
    """An account message in the outbox (for no team), committed and not handed to Celery."""
    with app.app_context():
        outbox = mail.queue_email(
            keyring.get(), tenant_id=None, to=to, subject="Hello", text_body="Hi", html_body="<p>Hi</p>"
        )
        outbox_id = outbox.id
        db.session.commit()
        mail.discard_queued()
        db.session.remove()
    return outbox_id


def set_row(app: Flask, outbox_id: uuid.UUID, **values: Any) -> None:
    """Change one outbox row as its worker may (in the message's own context)."""
    with app.app_context(), tenancy.tenant_context(outbox_id=outbox_id):
        db.session.execute(
            update(OutboxEmail).where(OutboxEmail.id == outbox_id).values(**values),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
        db.session.remove()


def swept(app: Flask) -> set[uuid.UUID]:
    with app.app_context():
        try:
            return set(mail.unsent_ids(older_than=SWEEP_AGE))
        finally:
            db.session.remove()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    config = load_config({"NYXCORE_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db"})
    application = create_app(config)
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_app(request: pytest.FixtureRequest) -> Flask:
    app: Flask = request.getfixturevalue("app" if request.param == "postgresql" else "sqlite_app")
    return app


def test_the_sweep_leaves_a_message_alone_while_its_retry_is_scheduled(any_app: Flask) -> None:
    app, now = any_app, datetime.now(UTC)
    names = ("waiting", "scheduled", "running_late", "lost", "used_up", "refused")
    ids = {name: queue(app, f"{name}@example.com") for name in names}
    for outbox_id in ids.values():
        set_row(app, outbox_id, created_at=now - timedelta(minutes=10))
    failed = {"attempts": 1, "failure": "unreachable"}
    set_row(app, ids["scheduled"], **failed, retry_at=now + timedelta(minutes=10))
    set_row(app, ids["running_late"], **failed, retry_at=now - timedelta(seconds=30))  # due: its worker is busy
    set_row(app, ids["lost"], **failed, retry_at=now - timedelta(minutes=2))  # overdue: lost with its worker
    set_row(app, ids["used_up"], attempts=mail.MAX_ATTEMPTS, failure="unreachable")
    set_row(app, ids["refused"], attempts=1, failure="address_refused", body_ciphertext=None)
    assert swept(app) == {ids["waiting"], ids["lost"]}


@pytest.mark.usefixtures("real_delivery")
def test_a_message_is_attempted_at_most_max_attempts_times_whoever_starts_the_tries(
    app: Flask, mail_server: MailServer, admin_engine: Engine
) -> None:
    mail_server.refuse_next(10 * mail.MAX_ATTEMPTS)  # "451 4.3.0 Try again later", for as long as it takes
    outbox_id = queue(app, "patient@example.com")
    set_row(app, outbox_id, created_at=datetime.now(UTC) - timedelta(minutes=10))
    deliver = app.extensions["celery"].tasks[mail.DELIVER_TASK]

    # The first try fails and schedules a retry: the sweep does not start a second chain meanwhile.
    with pytest.raises(smtplib.SMTPDataError):
        deliver(str(outbox_id))
    stored = dicts(admin_engine, "SELECT attempts, retry_at, failure FROM outbox_emails")[0]
    assert stored["attempts"] == 1 and stored["retry_at"] is not None and stored["failure"] == "deferred"
    assert outbox_id not in swept(app)

    # Retries, and chains the sweep started (for a retry lost with its worker, or before this fix),
    # all count on the row: the MAX_ATTEMPTS-th failure gives up, and nothing tries after it.
    outcomes = []
    for _ in range(2 * mail.MAX_ATTEMPTS):
        try:
            outcomes.append(deliver(str(outbox_id)))
        except smtplib.SMTPDataError:
            outcomes.append("retry")
    assert outcomes.count("retry") == mail.MAX_ATTEMPTS - 2  # the first try, then these, then the last
    assert outcomes[mail.MAX_ATTEMPTS - 2 :] == [False] * (mail.MAX_ATTEMPTS + 2)
    assert mail_server.attempts == mail.MAX_ATTEMPTS
    stored = dicts(
        admin_engine, "SELECT attempts, retry_at, failure, sent_at, body_ciphertext FROM outbox_emails"
    )[0]
    assert stored == {
        "attempts": mail.MAX_ATTEMPTS,
        "retry_at": None,
        "failure": "deferred",
        "sent_at": None,
        "body_ciphertext": None,  # given up: the sealed link rests nowhere any more
    }
    assert outbox_id not in swept(app)
    assert not mail_server.messages
