"""Celery entry point: `celery -A worker worker` and `celery -A worker beat`."""

import gc

from nyxcore import create_app_or_exit

flask_app = create_app_or_exit()
celery = flask_app.extensions["celery"]
# As wsgi.py: the app's objects live as long as the process; full collections no longer walk them,
# and the prefork children share those pages with the parent instead of copying them (issue 15).
gc.freeze()
