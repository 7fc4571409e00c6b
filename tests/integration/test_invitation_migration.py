"""Migration 0010 on PostgreSQL: delivery errors stored as exception text before it become kinds.

The pending list used to show `last_error` as it was ("ConnectionRefusedError: [Errno 111] ...");
after the upgrade no such text is left, our own words (a cancellation) are kept, and the outbox's
row-level security is still forced. On a database of its own, as tests/integration/test_account_migration.py.
"""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from tests.helpers import rows
from tests.integration.test_account_migration import _migrate, fresh_database  # noqa: F401  (a fixture)

LEGACY = {
    "ConnectionRefusedError: [Errno 111] Connection refused": "unreachable",
    "SMTP 550: 5.1.1 <x@example.com>: mailbox unavailable": "address_refused",
    "SMTP 451: 4.3.0 Try again later": "deferred",
    "SMTP 554: 5.7.1 rejected": "rejected",
    "cannot decrypt the stored body: unknown key id": "unreadable",
    "KeyError: 'text'": "unknown",
}
CANCELLED = "Not sent: the invitation was revoked before delivery."


def test_the_upgrade_turns_stored_exception_texts_into_kinds(fresh_database):  # noqa: F811
    _migrate(fresh_database, "0009")
    admin = create_engine(fresh_database.admin_url)
    try:
        with admin.begin() as conn:
            for error in (*LEGACY, CANCELLED):
                conn.execute(
                    text(
                        "INSERT INTO outbox_emails (id, to_address, subject, attempts, last_error) "
                        "VALUES (:i, 'x@example.com', 'Hello', 1, :e)"
                    ),
                    {"i": uuid.uuid4(), "e": error},
                )
        _migrate(fresh_database, "head")
        stored = rows(admin, "SELECT failure, last_error FROM outbox_emails")
        assert sorted((row.failure or "", row.last_error or "") for row in stored) == sorted(
            [("", CANCELLED), *((kind, "") for kind in LEGACY.values())]
        )
        forced = rows(admin, "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'outbox_emails'")
        assert forced[0][0] is True
    finally:
        admin.dispose()
