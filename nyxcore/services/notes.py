"""NyxBook notes: team content that members write and viewers read."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import DateTime, Integer, String, bindparam, func, select, text, type_coerce
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.database import IdText
from nyxcore.errors import InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import Note, User
from nyxcore.pagination import Page
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.tenancy import Actor

PER_PAGE = 50
READ = Operation("notes.read", TenantRole.VIEWER)
WRITE = Operation("notes.write", TenantRole.MEMBER)


class NoteLine(NamedTuple):
    """A note as the list shows it: its title, when it changed and who wrote it (no body).

    A named tuple made straight from the statement's row, as the member list's rows are (a frozen
    dataclass's __init__ cost more than reading the row, fifty rows a page)."""

    id: str  # as the link prints it (PostgreSQL casts it: no `uuid.UUID` per row)
    title: str
    updated_at: datetime
    author_name: str | None


# The total is an uncorrelated sub-select, counted once from the notes alone: `count(*) OVER ()`
# would join every note's author (a private row under RLS) before the LIMIT.
_NOTE_COUNT = select(func.count()).select_from(Note).where(Note.tenant_id == bindparam("tenant_id"))
_NOTE_LINES = (
    select(type_coerce(Note.id, IdText()), Note.title, Note.updated_at, User.name, _NOTE_COUNT.scalar_subquery())
    .outerjoin(User, User.id == Note.author_id)
    .order_by(Note.updated_at.desc(), Note.id.desc())
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)


# PostgreSQL reads the page through `nyxcore_note_lines` (migration 0021: planned once per connection,
# under the same policies, filtered by the team named here); SQLite (`make run`) through `_NOTE_LINES`.
_NOTE_PAGE = (
    text(
        "SELECT id::text AS id, title, updated_at, author_name, total"
        " FROM nyxcore_note_lines(:tenant_id, :limit, :offset)"
    )
    .columns(id=String(), title=String(), updated_at=DateTime(timezone=True), author_name=String(), total=Integer())
    .execution_options(**{tenancy.ALL_TENANTS: True})
)


def list_notes(actor: Actor, *, page: int, per_page: int = PER_PAGE) -> Page[NoteLine]:
    """A page of the actor's team's notes, most recently changed first, and how many there are (one statement)."""
    params = {"tenant_id": actor.tenant_id, "limit": per_page, "offset": (page - 1) * per_page}
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    rows = db.session.execute(_NOTE_PAGE if postgresql else _NOTE_LINES, params).all()
    if rows:
        total = rows[0][-1]
    elif page > 1:  # past the end: no row carried the count
        total = db.session.scalar(_NOTE_COUNT, params) or 0
    else:
        total = 0
    return Page([NoteLine._make(row[:-1]) for row in rows], page, per_page, total)


def get_note(note_id: uuid.UUID) -> Note:
    """A note of the active team; another team's or an unknown id raises NotFound."""
    note = db.session.scalar(select(Note).options(joinedload(Note.author)).where(Note.id == note_id))
    if note is None:
        raise NotFound("There is no such note in this team.")
    return note


def _clean(title: str) -> str:
    title = title.strip()
    if not title:
        raise InvalidInput("Give the note a title.", field="title")
    return title


def create_note(actor: Actor, *, title: str, body: str) -> Note:
    """Add a note by the actor. Raises PermissionDenied (viewers), InvalidInput (no title)."""
    WRITE.check(actor)
    note = Note(tenant_id=actor.tenant_id, author_id=actor.user_id, title=_clean(title), body=body)
    db.session.add(note)
    db.session.flush()
    audit.record(
        actor.tenant_id, actor.user_id, "note.created", target=note.title
    )  # the title, never the body
    return note


def update_note(actor: Actor, note_id: uuid.UUID, *, title: str, body: str) -> Note:
    """Change a note's title and text. Raises PermissionDenied, NotFound, InvalidInput."""
    WRITE.check(actor)
    note = get_note(note_id)
    old_title = note.title
    note.title, note.body = _clean(title), body
    note.updated_at = func.now()
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "note.edited", target=note.title, old=old_title)
    return note


def delete_note(actor: Actor, note_id: uuid.UUID) -> str:
    """Delete a note; returns its title. Raises PermissionDenied, NotFound."""
    WRITE.check(actor)
    note = get_note(note_id)
    db.session.delete(note)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "note.deleted", target=note.title)
    return note.title
