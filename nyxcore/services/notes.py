"""NyxBook notes: team content that members write and viewers read."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from nyxcore.errors import InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import Note, TenantMember
from nyxcore.pagination import Page

PER_PAGE = 50


def list_notes(*, page: int, per_page: int = PER_PAGE) -> Page[Note]:
    """A page of the active team's notes, most recently changed first, with authors (2 queries)."""
    total = db.session.scalar(select(func.count()).select_from(Note)) or 0
    notes = db.session.scalars(
        select(Note)
        .options(joinedload(Note.author))
        .order_by(Note.updated_at.desc(), Note.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return Page(list(notes), page, per_page, total)


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


def create_note(actor: TenantMember, *, title: str, body: str) -> Note:
    note = Note(tenant_id=actor.tenant_id, author_id=actor.user_id, title=_clean(title), body=body)
    db.session.add(note)
    db.session.flush()
    return note


def update_note(actor: TenantMember, note_id: uuid.UUID, *, title: str, body: str) -> Note:
    note = get_note(note_id)
    note.title, note.body = _clean(title), body
    note.updated_at = func.now()
    db.session.flush()
    return note


def delete_note(actor: TenantMember, note_id: uuid.UUID) -> str:
    note = get_note(note_id)
    db.session.delete(note)
    db.session.flush()
    return note.title
