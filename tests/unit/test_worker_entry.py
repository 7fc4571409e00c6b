"""worker.py, the Celery entry point: its pool size when the command line does not give one."""

from __future__ import annotations

from tests.helpers import entry_point_says


def test_the_worker_runs_two_pool_processes_per_core_unless_told() -> None:
    # Importing worker.py builds the app, as `celery -A worker` does.
    said = entry_point_says("import os, worker; print(worker.celery.conf.worker_concurrency, os.cpu_count())")
    concurrency, cores = (int(value) for value in said.split())
    assert concurrency == 2 * cores
