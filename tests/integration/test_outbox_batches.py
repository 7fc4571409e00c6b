"""Several outbox messages per delivery task (issue 15): a batch keeps every guarantee one message per
task gave. Each message is claimed and committed on its own, so one that fails neither holds back
nor undoes the others, a row another worker holds is skipped, and a batch run again (as after a
crash, the task unacknowledged) sends nothing twice.

On PostgreSQL as the app role, the batch task's real body against the real SMTP server of
tests/integration/mailserver.py, its follow-up tasks on the real Redis broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from nyxcore.extensions import db, keyring
from nyxcore.services import mail
from tests.helpers import dicts
from tests.integration import worker as celery_worker
from tests.integration.mailserver import MailServer

pytestmark = pytest.mark.usefixtures("real_delivery")


def queue(app: Flask, count: int, *, dispatch: bool = False) -> list[uuid.UUID]:
    """`count` account messages in the outbox, committed in one transaction; handed to Celery if `dispatch`."""
    with app.app_context():
        ids = [
            mail.queue_email(
                keyring.get(), tenant_id=None, to=f"batch{n}@example.com", subject="Hi", text_body="Hi", html_body="Hi"
            ).id
            for n in range(count)
        ]
        db.session.commit()
        if dispatch:
            mail.dispatch_queued()
        else:
            mail.discard_queued()
        db.session.remove()
    return ids


def deliver_batch(app: Flask, ids: list[uuid.UUID]) -> int:
    """Run the batch task's body here, as a worker would."""
    return int(app.extensions["celery"].tasks[mail.DELIVER_BATCH_TASK]([str(i) for i in ids]))


def rows(admin_engine: Engine) -> dict[str, dict[str, object]]:
    found = dicts(
        admin_engine,
        "SELECT to_address, attempts, failure, sent_at IS NOT NULL AS sent, retry_at IS NOT NULL AS retry_due, "
        "body_ciphertext IS NOT NULL AS has_body FROM outbox_emails",
    )
    return {str(row.pop("to_address")): row for row in found}


@pytest.fixture(autouse=True)
def smtp_connections_closed(real_delivery: None, app: Flask) -> Iterator[None]:  # real_delivery: before `app`
    """The batches run in this process: say QUIT on the connection they opened, as a stopping worker does."""
    yield
    transport = app.extensions.get("nyxcore_mail_transport")
    if isinstance(transport, mail.SMTPTransport):
        transport.close_all()


@pytest.fixture
def purged() -> None:
    celery_worker.purge_queue()


@pytest.mark.usefixtures("purged")
def test_a_request_hands_its_messages_to_celery_a_batch_per_task(app: Flask) -> None:
    queue(app, 2 * mail.DELIVERY_BATCH + 1, dispatch=True)
    assert celery_worker.waiting_messages() == 3  # not 21: one task per message was the cost


@pytest.mark.usefixtures("purged")
@pytest.mark.parametrize(
    ("reply", "kind", "retried"),
    [("451 4.3.0 Try again later", "deferred", True), ("550 5.1.1 No such user", "address_refused", False)],
)
def test_a_failing_message_neither_holds_back_nor_undoes_the_others(
    app: Flask, mail_server: MailServer, admin_engine: Engine, reply: str, kind: str, retried: bool
) -> None:
    queue(app, 1)  # sent first, and refused
    ids = queue(app, 3)
    mail_server.refuse_next(1, reply)
    assert deliver_batch(app, ids) == 2
    stored = rows(admin_engine)
    assert stored["batch0@example.com"] == {  # its attempt is recorded, as a single task records it
        "attempts": 1,
        "failure": kind,
        "sent": False,
        "retry_due": retried,
        "has_body": retried,  # a permanent refusal is given up on: the body is wiped
    }
    for sent in ("batch1@example.com", "batch2@example.com"):
        assert stored[sent] == {"attempts": 1, "failure": None, "sent": True, "retry_due": False, "has_body": False}
    # A deferred message goes on as its own retry chain; a refused one is not tried again.
    assert celery_worker.waiting_messages() == int(retried)
    with celery_worker.running_worker(app, purge_first=False):
        mail_server.assert_quiet(2.5 if retried else 0.5, expected=3 if retried else 2)
    assert max(mail_server.deliveries().values()) == 1


def test_a_batch_skips_a_row_another_worker_holds_and_run_again_sends_nothing_twice(
    app: Flask, mail_server: MailServer, admin_engine: Engine
) -> None:
    ids = queue(app, 3)
    with admin_engine.connect() as other_worker:  # holds the middle row, as a worker sending it does
        other_worker.execute(text("SELECT id FROM outbox_emails WHERE id = :i FOR UPDATE"), {"i": ids[1]})
        assert deliver_batch(app, ids) == 2
        other_worker.rollback()
    assert not rows(admin_engine)["batch1@example.com"]["sent"]
    assert deliver_batch(app, ids) == 1  # the batch run again (after a crash): only what was left
    assert deliver_batch(app, ids) == 0
    assert mail_server.deliveries() == {f"batch{n}@example.com": 1 for n in range(3)}


@pytest.mark.usefixtures("purged")
def test_once_the_server_is_unreachable_the_rest_of_a_batch_go_on_one_task_each(
    app: Flask, mail_server: MailServer, admin_engine: Engine
) -> None:
    ids = queue(app, 3)
    mail_server.stop()
    assert deliver_batch(app, ids) == 0
    stored = rows(admin_engine)
    assert stored["batch0@example.com"]["failure"] == "unreachable"
    # The others were not tried here (each would have waited for the server in turn).
    assert [stored[f"batch{n}@example.com"]["attempts"] for n in (1, 2)] == [0, 0]
    assert celery_worker.waiting_messages() == 3  # the first one's retry, and one task for each other
    mail_server.start()
    with celery_worker.running_worker(app, purge_first=False):
        mail_server.wait_for(3, timeout=10)
        mail_server.assert_quiet(0.5, expected=3)
    assert mail_server.deliveries() == {f"batch{n}@example.com": 1 for n in range(3)}


@pytest.mark.usefixtures("purged")
def test_a_message_that_fails_outside_smtp_does_not_hold_back_the_rest_of_its_batch(
    app: Flask, mail_server: MailServer, admin_engine: Engine
) -> None:
    # A stored subject with a line break: render() refuses it with a ValueError, not an SMTP error.
    ids = queue(app, 3)
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE outbox_emails SET subject = 'Hi\nthere' WHERE id = :i"), {"i": ids[0]})
    assert deliver_batch(app, ids) == 2
    stored = rows(admin_engine)
    # Its attempt is recorded as a single task records it (left to the sweep once its retry is overdue).
    assert stored["batch0@example.com"] == {
        "attempts": 1,
        "failure": "unknown",
        "sent": False,
        "retry_due": True,
        "has_body": True,
    }
    assert mail_server.deliveries() == {"batch1@example.com": 1, "batch2@example.com": 1}
    assert celery_worker.waiting_messages() == 0  # no retry chain of its own, as a single task has none


@pytest.mark.usefixtures("purged")
def test_a_soft_time_limit_ends_the_batch_instead_of_counting_as_one_messages_failure(
    app: Flask, mail_server: MailServer, admin_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's soft time limit (Celery raises it inside whatever runs) stops the task; the batch's
    # catch-all for one message's error must not swallow it and go on sending.
    ids = queue(app, 3)
    real_render = mail.render

    def out_of_time(outbox_id: uuid.UUID, *args: object) -> object:
        if outbox_id == ids[0]:
            raise SoftTimeLimitExceeded()
        return real_render(outbox_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(mail, "render", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        deliver_batch(app, ids)
    assert mail_server.deliveries() == {}
    stored = rows(admin_engine)
    assert [stored[f"batch{n}@example.com"]["attempts"] for n in range(3)] == [1, 0, 0]
    assert not any(row["sent"] for row in stored.values())
