"""The app exactly as `wsgi:app` builds it, plus two bench-only routes for bench/load.py (issue 8).

    gunicorn bench.reference_app:app ...

- `GET /bench/reference/<uuid>`: one indexed SELECT by primary key (`users`, so that no tenant
  context is needed) rendered through a tiny template. It goes through everything a real page
  goes through (request hooks, the tenant-context event, the pool and its pre-ping, the commit at
  the end, the security headers), so a page's throughput divided by this one's says what the page
  itself costs on top of the stack.
- `GET /bench/hello`: a constant string, no database: the floor of the stack.

Serving every URL from one app keeps the reference in the same processes and configuration as the
pages it is compared with. Never deployed: wsgi.py does not import this module.
"""

from __future__ import annotations

import uuid

from flask import abort, render_template_string
from sqlalchemy import text

from nyxcore import create_app, tenancy
from nyxcore.extensions import db

REFERENCE_TEMPLATE = "<!doctype html><title>Reference</title><p>{{ name }} &lt;{{ email }}&gt;</p>"

app = create_app()


@app.get("/bench/reference/<uuid:user_id>")
def reference(user_id: uuid.UUID) -> str:
    """One primary-key lookup and a tiny template (as that user: `users` is private under RLS)."""
    with tenancy.tenant_context(user_id=user_id):
        row = db.session.execute(
            text("SELECT name, email FROM users WHERE id = :id"), {"id": user_id}
        ).one_or_none()
    if row is None:
        abort(404)
    return render_template_string(REFERENCE_TEMPLATE, name=row.name, email=row.email)


@app.get("/bench/hello")
def hello() -> str:
    """No database, no template."""
    return "Hello from NyxCore"
