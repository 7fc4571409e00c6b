"""Creating teams and switching between them (`/teams/...`)."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, redirect, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nyxcore import authz, navigation
from nyxcore.errors import DomainError
from nyxcore.forms import add_domain_error
from nyxcore.services import teams
from nyxcore.web import form_page, notify

bp = Blueprint("teams", __name__, url_prefix="/teams")


class NewTeamForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Team name", validators=[DataRequired(), Length(max=80)])
    slug = StringField("Slug (optional)", validators=[Optional(), Length(max=63)])


class SwitchTeamForm(FlaskForm):  # type: ignore[misc]
    tenant_id = HiddenField(validators=[DataRequired()])
    from_page = HiddenField()  # the path of the page the switcher was on; only matched against routes


@bp.route("/new", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def new() -> Response | tuple[str, int]:
    form = NewTeamForm()
    if form.validate_on_submit():
        try:
            with authz.acting_for_a_new_team(current_user.id) as tenant_id:
                tenant, membership = teams.create_additional_team(
                    creator=current_user, tenant_id=tenant_id, name=form.name.data, slug=form.slug.data or None
                )
        except DomainError as exc:
            add_domain_error(form, exc, "name")
        else:
            authz.activate_team(membership)
            notify(f"Team {tenant.name} created. You are its owner.", "success")
            return redirect(url_for("team.overview"))
    return form_page("teams/new.html", form)


@bp.post("/switch")
@login_required  # type: ignore[untyped-decorator]
def switch() -> Response:
    """Make another of the user's teams active; a team they are not in answers 404.

    A team they lost since the page was shown says why (once), and they stay where they are. The
    new team opens on the same kind of page as the one switched from (navigation.page_after_switch).
    """
    form = SwitchTeamForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        wanted = uuid.UUID(form.tenant_id.data)
    except ValueError:
        abort(404)
    membership = next((m for m in authz.all_my_teams() if m.tenant_id == wanted), None)
    if membership is None:
        if authz.tell_of_lost_team(wanted):
            return redirect(url_for("main.index"))
        abort(404)
    authz.activate_team(membership)
    notify(f"Switched to {membership.tenant.name}.", "info")
    return redirect(url_for(navigation.page_after_switch(form.from_page.data or "")))
