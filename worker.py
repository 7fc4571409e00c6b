"""Celery entry point: `celery -A worker worker` and `celery -A worker beat`."""

import gc
import os

from nyxcore import create_app_or_exit

flask_app = create_app_or_exit()
celery = flask_app.extensions["celery"]
# Delivering mail mostly waits for the SMTP server and PostgreSQL, so two pool processes per core
# (Celery's default is one) keep the cores busy: bench/email_pipeline.py delivered the most with
# prefork 4 on 2 cores (bench/RESULTS.md, "Pool and concurrency"). `--concurrency` still decides.
celery.conf.worker_concurrency = celery.conf.worker_concurrency or 2 * (os.cpu_count() or 1)
# As wsgi.py: the app's objects live as long as the process; full collections no longer walk them,
# and the prefork children share those pages with the parent instead of copying them (issue 15).
gc.freeze()
