"""WSGI entry point: `gunicorn wsgi:app`, and `flask --app wsgi ...` for the CLI."""

from nyxcore import create_app_or_exit

app = create_app_or_exit()
