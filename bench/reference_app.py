"""The app exactly as `wsgi:app` builds it, plus bench-only routes for bench/load.py (issues 8 and 15).

    gunicorn bench.reference_app:app ...   (from the checkout: it imports wsgi.py)

- `GET /bench/ref50`: the reference. Signed out, one indexed SELECT of 50 notes of team 0 through the
  ORM inside that team's context (so the ORM scoping and row-level security apply), rendered into a
  table from a template file (compiled once, cached by Jinja like every page's). It goes through
  everything a real page goes through (request hooks, the tenant-context event, the pool, the
  commit at the end, the security headers), so a page's throughput divided by this one's says what
  the page itself costs on top of the stack for the same kind of work.
- `GET /bench/hello`: a constant string, no database: the stack's fixed cost per request, compared
  with a bare Flask app (bench/bare_app.py) under the same gunicorn configuration.
- `GET /bench/layout`: what every signed-in page pays before its own content. Guarded as a viewer
  page is (`role_required(notes.READ)`: the session load, the Actor and the tenant context), it
  renders base.html (navigation, team switcher, flashes, CSRF token) with an empty content block.
- `GET /bench/ref50-signed-in`: the reference's work on a signed-in page: the same SELECT of 50 notes
  in the signed-in user's team (team 0 for the bench's owner), the same table, in base.html, guarded
  like `/bench/layout`. For information: what the team page and NyxBook cost beyond the fixed cost
  every signed-in page pays (the session load and the layout), which the signed-out reference does
  not pay.

Serving every URL from one app keeps the reference in the same processes and configuration as the
pages it is compared with. Never deployed: wsgi.py does not import this module.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select

from nyxcore import tenancy
from nyxcore.authz import acting, role_required
from nyxcore.extensions import db
from nyxcore.models import Note
from nyxcore.services import notes
from wsgi import app  # the app exactly as deployed

# The seed's team 0 (bench/_common.py: md5('team-0')::uuid).
REFERENCE_TEAM = uuid.UUID(hashlib.md5(b"team-0").hexdigest())  # noqa: S324 (an id, not a secret)
ROWS = 50

bench = Blueprint("bench", __name__, url_prefix="/bench", template_folder="templates")


def _latest_notes(tenant_id: uuid.UUID) -> Sequence[Any]:
    """50 notes of a team, newest first, by the (tenant_id, updated_at) index."""
    return db.session.execute(
        select(Note.id, Note.title, Note.updated_at)
        .where(Note.tenant_id == tenant_id)
        .order_by(Note.updated_at.desc())
        .limit(ROWS)
    ).all()


@bench.get("/ref50")
def ref50() -> str:
    """50 notes of team 0 into a template file, signed out."""
    with tenancy.tenant_context(tenant_id=REFERENCE_TEAM):
        rows = _latest_notes(REFERENCE_TEAM)
    return render_template("bench/ref50.html", rows=rows)


@bench.get("/ref50-signed-in")
@role_required(notes.READ)
def ref50_signed_in() -> str:
    """The same 50 notes (of the signed-in user's team) and table, in the layout of every signed-in page."""
    return render_template("bench/ref50_signed_in.html", rows=_latest_notes(acting().tenant_id))


@bench.get("/hello")
def hello() -> str:
    """No database, no template."""
    return "Hello from NyxCore"


@bench.get("/layout")
@role_required(notes.READ)
def layout() -> str:
    """The layout of every signed-in page around an empty content block: the signed-in fixed cost."""
    return render_template("bench/layout.html")


app.register_blueprint(bench)
