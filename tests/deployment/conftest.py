"""Fixtures shared by the deployment tests (several instances, PgBouncer)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.mailserver import MailServer, running_mail_server


@pytest.fixture(scope="module")
def mail() -> Iterator[MailServer]:
    """An SMTP server for the module's cluster, started once for the module."""
    with running_mail_server() as server:
        yield server
