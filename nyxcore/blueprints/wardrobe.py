"""Wardrobe (`/wardrobe/...`): the team's shared wardrobe. Every route needs the member role."""

from __future__ import annotations

import uuid

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from nyxcore.authz import acting, role_required
from nyxcore.confirmation import Confirmation, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.forms import add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.pagination import page_number
from nyxcore.services import wardrobe
from nyxcore.templating import url_pattern
from nyxcore.web import form_page, keeps_typed_input, notify

bp = Blueprint("wardrobe", __name__, url_prefix="/wardrobe")
NAV = (NavEntry("Wardrobe", "wardrobe.index", 25),)


class ItemForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    category = StringField("Category", validators=[Length(max=60)])
    size = StringField("Size", validators=[Length(max=30)])
    notes = TextAreaField("Notes", validators=[Length(max=10_000)])


def _fields(form: ItemForm) -> dict[str, str]:
    return {
        "name": form.name.data,
        "category": form.category.data or "",
        "size": form.size.data or "",
        "notes": form.notes.data or "",
    }


@bp.get("/")
@role_required(wardrobe.USE)
def index() -> str:
    search = request.args.get("q", "")[:100]
    page = wardrobe.list_items(acting(), page=page_number(request.args.get("page")), search=search)
    return render_template(
        "wardrobe/index.html", page=page, search=search, delete_url=url_pattern("wardrobe.delete", "item_id")
    )


@bp.route("/new", methods=["GET", "POST"])
@role_required(wardrobe.USE)
@keeps_typed_input
def new() -> Response | tuple[str, int]:
    form = ItemForm()
    if form.validate_on_submit():
        try:
            item = wardrobe.add_item(acting(), **_fields(form))
        except DomainError as exc:
            add_domain_error(form, exc, "name")
        else:
            notify(f"Added “{item.name}” to the wardrobe.", "success")
            return redirect(url_for("wardrobe.index"))
    return form_page("wardrobe/form.html", form, item=None)


@bp.route("/<uuid:item_id>/edit", methods=["GET", "POST"])
@role_required(wardrobe.USE)
@keeps_typed_input
def edit(item_id: uuid.UUID) -> Response | tuple[str, int]:
    item = wardrobe.get_item(acting(), item_id)
    form = ItemForm(obj=item)
    if form.validate_on_submit():
        try:
            wardrobe.update_item(acting(), item_id, **_fields(form))
        except DomainError as exc:
            add_domain_error(form, exc, "name")
        else:
            notify("Item saved.", "success")
            return redirect(url_for("wardrobe.index"))
    return form_page("wardrobe/form.html", form, item=item)


@bp.route("/<uuid:item_id>/delete", methods=["GET", "POST"])
@role_required(wardrobe.USE)
def delete(item_id: uuid.UUID) -> ResponseReturnValue:
    item = wardrobe.get_item(acting(), item_id)
    if not is_confirmed():
        return confirm_page(
            Confirmation(
                title=f"Remove “{item.name}” from the wardrobe?",
                consequences=(
                    f"“{item.name}” and its notes are removed for everyone in {acting().tenant.name}.",
                ),
                button="Remove the item",
                back=url_for("wardrobe.index"),
            )
        )
    name = wardrobe.delete_item(acting(), item_id)
    notify(f"Removed “{name}” from the wardrobe.", "info")
    return redirect(url_for("wardrobe.index"))
