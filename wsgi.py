"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi ...` for the CLI."""

import gc

from nyxcore import create_app_or_exit

app = create_app_or_exit()
# The app's objects (routes, templates, metadata, compiled statements) live as long as the process:
# moved out of the collector's generations, full collections no longer walk them (issue 15).
gc.freeze()
