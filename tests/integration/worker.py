"""A real Celery worker in the test process, on the test Redis, consuming a queue of its own.

Each `create_app` makes its own Celery app (`app.extensions["celery"]`, see
`nyxcore.tasks.celery_init_app`) from its CELERY settings. So, for a test that wants real delivery:

    app_config["CELERY"] = {**app_config["CELERY"], **celery_config()}   # before `app` is built
    ...
    with running_worker(app):
        ...  # tasks published by the app are consumed by a worker thread of this process

The queue name is unique to this test run, so concurrent runs sharing one Redis never take each
other's messages; it is purged before the worker starts (unless asked not to) and after it stops. Celery is kept from
re-configuring logging (it would drop pytest's capture handlers from the root logger).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from flask import Flask

from nyxcore.config import BROKER_TRANSPORT_OPTIONS
from tests.conftest import REDIS_URL, forget_broker_connections

QUEUE = f"nyxcore-test-{uuid.uuid4().hex[:12]}"


def celery_config(broker_url: str = REDIS_URL) -> dict[str, Any]:
    """Overrides of the app's CELERY settings: really queue tasks on `broker_url`, in this run's queue."""
    return {
        "task_always_eager": False,
        "broker_url": broker_url,
        "task_default_queue": QUEUE,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": False,
        # BRPOP returns at least this often: a stopping worker waits for it (1 s by default).
        "broker_transport_options": {**BROKER_TRANSPORT_OPTIONS, "polling_interval": 0.1},
    }


def purge_queue(broker_url: str = REDIS_URL) -> int:
    """Delete the messages waiting in this run's queue; returns how many there were."""
    with kombu.Connection(broker_url, transport_options={"socket_connect_timeout": 2}) as conn:
        purged: int = kombu.Queue(QUEUE).bind(conn.default_channel).purge() or 0
        return purged


def waiting_messages(broker_url: str = REDIS_URL) -> int:
    """How many messages wait in this run's queue (not yet taken by a worker)."""
    with kombu.Connection(broker_url) as conn:
        _, count, _ = kombu.Queue(QUEUE).bind(conn.default_channel).queue_declare(passive=False)
        return int(count)


def _leave_logging_alone(**kwargs: Any) -> None:
    """A `setup_logging` receiver: its presence tells Celery not to touch the logging configuration."""


@contextmanager
def running_worker(app: Flask, *, concurrency: int = 2, purge_first: bool = True) -> Iterator[Any]:
    """Run a Celery worker thread (thread pool) for `app` until the block ends; stopped in finally.

    With `purge_first=False` the worker also takes what was queued before it started.
    """
    celery: Celery = app.extensions["celery"]
    assert celery.conf.task_default_queue == QUEUE, "configure the app with celery_config() first"
    forget_broker_connections(celery)
    if purge_first:
        purge_queue(celery.conf.broker_url)
    signals.setup_logging.connect(_leave_logging_alone)
    try:
        with start_worker(
            celery,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            loglevel="INFO",
            shutdown_timeout=30,
        ) as worker:
            yield worker
    finally:
        signals.setup_logging.disconnect(_leave_logging_alone)
        transport = app.extensions.get("nyxcore_mail_transport")
        if transport is not None and hasattr(transport, "close_all"):
            transport.close_all()
        purge_queue(celery.conf.broker_url)
        forget_broker_connections(celery)
