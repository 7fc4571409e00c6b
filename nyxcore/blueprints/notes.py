"""NyxBook: team notes (`/notes/...`). Viewers read; members and up write.

The pattern any new team feature follows: a TenantScoped model (isolated by RLS and the ORM
scope), a service, and views guarded by `@role_required`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from markupsafe import Markup
from werkzeug.wrappers.response import Response
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from nyxcore.authz import acting, role_required
from nyxcore.confirmation import Confirmation, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.forms import add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.pagination import page_number
from nyxcore.services import notes
from nyxcore.templating import format_time, text_of, url_pattern
from nyxcore.web import form_page, keeps_typed_input, notify

bp = Blueprint("notes", __name__, url_prefix="/notes")
NAV = (NavEntry("NyxBook", "notes.index", 20),)


class NoteForm(FlaskForm):  # type: ignore[misc]
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Text", validators=[Length(max=100_000)])


def note_rows(lines: Iterable[notes.NoteLine]) -> Markup:
    """The list's <tr>s, filled into fixed markup rather than rendered by Jinja row by row (issue 15):
    the markup the template's loop wrote, the same whitespace, as f-strings (as member_rows does).

    Safe as markup: the title and the author's name are escaped here (`text_of`), the rest is a
    UUID or a time.
    """
    url = text_of(url_pattern("notes.show", "note_id"))
    return Markup(  # noqa: S704 (escaped here)
        "".join(
            [
                f'\n      <tr><td data-label="Title"><a href="{url.format(line.id)}">{text_of(line.title)}</a></td>'
                f'<td data-label="Author">{text_of(line.author_name or "")}</td>'
                f'<td data-label="Changed">{format_time(line.updated_at)}</td></tr>\n    '
                for line in lines
            ]
        )
    )


@bp.get("/")
@role_required(notes.READ)
def index() -> str:
    page = notes.list_notes(acting(), page=page_number(request.args.get("page")))
    return render_template("notes/index.html", page=page, note_rows=note_rows(page.items))


@bp.route("/new", methods=["GET", "POST"])
@role_required(notes.WRITE)
@keeps_typed_input
def new() -> Response | tuple[str, int]:
    form = NoteForm()
    if form.validate_on_submit():
        try:
            note = notes.create_note(acting(), title=form.title.data, body=form.body.data or "")
        except DomainError as exc:
            add_domain_error(form, exc, "title")
        else:
            notify("Note saved.", "success")
            return redirect(url_for("notes.show", note_id=note.id))
    return form_page("notes/form.html", form, note=None)


@bp.get("/<uuid:note_id>")
@role_required(notes.READ)
def show(note_id: uuid.UUID) -> str:
    return render_template("notes/show.html", note=notes.get_note(note_id))


@bp.route("/<uuid:note_id>/edit", methods=["GET", "POST"])
@role_required(notes.WRITE)
@keeps_typed_input
def edit(note_id: uuid.UUID) -> Response | tuple[str, int]:
    note = notes.get_note(note_id)
    form = NoteForm(obj=note)
    if form.validate_on_submit():
        try:
            notes.update_note(acting(), note_id, title=form.title.data, body=form.body.data or "")
        except DomainError as exc:
            add_domain_error(form, exc, "title")
        else:
            notify("Note saved.", "success")
            return redirect(url_for("notes.show", note_id=note_id))
    return form_page("notes/form.html", form, note=note)


@bp.route("/<uuid:note_id>/delete", methods=["GET", "POST"])
@role_required(notes.WRITE)
def delete(note_id: uuid.UUID) -> ResponseReturnValue:
    note = notes.get_note(note_id)
    if not is_confirmed():
        return confirm_page(
            Confirmation(
                title=f"Delete the note “{note.title}”?",
                consequences=(
                    f"The note and its text are deleted for everyone in {acting().tenant.name}. It cannot be undone.",
                ),
                button="Delete the note",
                back=url_for("notes.show", note_id=note_id),
            )
        )
    title = notes.delete_note(acting(), note_id)
    notify(f"Deleted the note “{title}”.", "info")
    return redirect(url_for("notes.index"))
