"""Fixtures for the tests that deliver mail for real: an SMTP server (aiosmtpd) on loopback and a
Celery worker on the test Redis. A module opts in with

    pytestmark = pytest.mark.usefixtures("real_delivery")

and asks for `mail_server` (to read what arrived) and `worker` (to have it delivered).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.integration import worker as celery_worker
from tests.integration.mailserver import MailServer, running_mail_server


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    with running_mail_server(pipelining=True) as server:
        yield server


@pytest.fixture
def real_delivery(app_config: dict[str, Any], mail_server: MailServer) -> Iterator[None]:
    """The app sends mail over SMTP to `mail_server`, queued on the real Redis broker (before `app`)."""
    app_config.update(MAIL_BACKEND="smtp", SMTP_HOST=mail_server.host, SMTP_PORT=mail_server.port)
    app_config["CELERY"] = {**app_config["CELERY"], **celery_worker.celery_config()}
    yield
    celery_worker.purge_queue()  # what a test queued without starting a worker


@pytest.fixture
def app_engine(database: Any) -> Iterator[Engine]:
    """A plain engine as the app role: row-level security applies, the app's own scoping does not (raw SQL)."""
    engine = create_engine(database.app_url)
    yield engine
    engine.dispose()


@pytest.fixture
def worker(app: Flask) -> Iterator[Any]:
    with celery_worker.running_worker(app) as running:
        yield running
