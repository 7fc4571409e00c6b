"""worker.py, the Celery entry point: its pool size when the command line does not give one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_worker_runs_two_pool_processes_per_core_unless_told(tmp_path: Path) -> None:
    # A process of its own: importing worker.py builds the app, as `celery -A worker` does.
    environment = {
        **os.environ,
        "NYXCORE_ENV": "testing",
        "DATABASE_URL": f"sqlite:///{tmp_path}/worker.db",
    }
    printed = subprocess.run(
        [sys.executable, "-c", "import os, worker; print(worker.celery.conf.worker_concurrency, os.cpu_count())"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    concurrency, cores = (int(value) for value in printed[-2:])
    assert concurrency == 2 * cores
