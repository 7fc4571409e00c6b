"""The active team: members, roles, settings, ownership, audit log (`/team/...`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from markupsafe import Markup
from werkzeug.wrappers.response import Response
from wtforms import DateField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nyxcore.authz import acting, role_required
from nyxcore.blueprints.audit_log import render_audit
from nyxcore.blueprints.invite import pending_invitations
from nyxcore.blueprints.seats import seat_limit_form
from nyxcore.errors import DomainError, InvalidInput
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.pagination import Position, page_number
from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services import audit as audit_events
from nyxcore.services import endings, invitations, member_list, members, notices, seats
from nyxcore.templating import url_pattern
from nyxcore.tenancy import Actor
from nyxcore.web import form_status, notify

bp = Blueprint("team", __name__, url_prefix="/team")
NAV = (NavEntry("Team", "team.overview", 10), NavEntry("Audit log", "team.audit", 90))
log = logging.getLogger("nyxcore.team")
ROLE_CHOICES = [SelectChoice(role.value, role.label) for role in TenantRole]


class RoleForm(FlaskForm):  # type: ignore[misc]
    role = SelectField("Role", choices=ROLE_CHOICES, validators=[DataRequired()])


class EndDateForm(FlaskForm):  # type: ignore[misc]
    # Empty clears the end date.
    ends_on = DateField("Last day", validators=[Optional()])


class TransferForm(FlaskForm):  # type: ignore[misc]
    # Any current member is a valid choice; the service checks membership (another team's id is a 404).
    member_id = SelectField("New owner", choices=[], validators=[DataRequired()], validate_choice=False)


class SettingsForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Team name", validators=[DataRequired(), Length(max=80)])
    slug = StringField("Slug", validators=[DataRequired(), Length(max=63)])


class DeleteForm(FlaskForm):  # type: ignore[misc]
    confirm_name = StringField("Type the team's name to confirm", validators=[DataRequired(), Length(max=80)])


def _page_arg() -> int:
    return page_number(request.args.get("page"))


def _validated(form: FlaskForm) -> None:
    if not form.validate_on_submit():
        abort(400)


@bp.get("/")
@role_required(members.VIEW)
def overview() -> str:
    actor = acting()
    search = request.args.get("q", "")[:100]
    page = member_list.list_members(actor, at=Position.from_args(request.args), search=search)
    # Admins see the first few pending invitations here; the invitations page has them all.
    pending: dict[str, Any] = {}
    if invitations.MANAGE.permits(actor.role, email_verified=actor.email_verified):
        pending = pending_invitations(actor, page=1, per_page=10)
        del pending["confirm_form"]  # the page has its own bare CSRF form
    # What every row needs is worked out once per page: which rows the actor may manage, the
    # <option>s for each current role, and the forms' URLs.
    grantable = grantable_roles(actor.role)
    return render_template(
        "team/overview.html",
        tenant=actor.tenant,
        page=page,
        seats=seats.SeatUsage(
            page.members, page.open_invitations, actor.tenant.seat_limit, capped=page.members_capped
        ),
        search=search,
        manageable={
            m.id for m in page.items if m.id != actor.member_id and can_manage_role(actor.role, m.role, m.role)
        },
        role_options={role: role_options(grantable, selected=role) for role in TenantRole},
        role_url=url_pattern("team.change_role", "member_id"),
        remove_url=url_pattern("team.remove_member", "member_id"),
        end_url=url_pattern("team.set_end", "member_id"),
        confirm_form=ConfirmForm(),
        **pending,
    )


def role_options(roles: list[TenantRole], *, selected: TenantRole) -> Markup:
    """The <option>s of a role select with `selected` chosen."""
    option = Markup('<option value="{}"{}>{}</option>')
    chosen = Markup(" selected")
    return Markup("").join(option.format(r.value, chosen if r is selected else "", r.label) for r in roles)


@bp.post("/members/<uuid:member_id>/role")
@role_required(members.MANAGE)
def change_role(member_id: uuid.UUID) -> Response:
    form = RoleForm()
    _validated(form)
    member = members.change_role(acting(), member_id, TenantRole(form.role.data))
    notify(f"{member.user.name} is now {member.role.label.lower()}.", "success")
    return redirect(url_for("team.overview"))


@bp.post("/members/<uuid:member_id>/remove")
@role_required(members.MANAGE)
def remove_member(member_id: uuid.UUID) -> Response:
    _validated(ConfirmForm())
    user = members.remove_member(acting(), member_id)
    notify(f"{user.name} was removed from the team.", "success")
    return redirect(url_for("team.overview"))


@bp.post("/members/<uuid:member_id>/end")
@role_required(endings.SET_END)
def set_end(member_id: uuid.UUID) -> Response:
    """Give a membership its last day, or clear it (an empty date)."""
    form = EndDateForm()
    if not form.validate_on_submit():
        if form.ends_on.errors:
            raise InvalidInput("Give the last day as a date, for example 2027-01-31.")
        abort(400)
    member = endings.set_end_date(acting(), member_id, form.ends_on.data)
    if member.ends_at is None:
        notify(f"{member.user.name}'s membership no longer ends.", "success")
    else:
        notify(f"{member.user.name} stays in the team until {notices.last_day(member.ends_at)}.", "success")
    return redirect(url_for("team.overview"))


@bp.post("/leave")
@role_required(members.LEAVE)
def leave() -> Response:
    _validated(ConfirmForm())
    # "You left <team>." is said by the notice the next request (the redirect) takes: services/notices.py.
    members.leave_team(acting())
    return redirect(url_for("main.index"))


def _render_settings(
    actor: Actor, *, form: SettingsForm | None = None, delete_form: DeleteForm | None = None
) -> tuple[str, int]:
    transfer = TransferForm(prefix="transfer")
    transfer.member_id.choices = [
        SelectChoice(str(m.id), f"{m.name} ({m.role.label})")
        for m in member_list.list_members(actor, per_page=500).items
        if m.id != actor.member_id
    ]
    form = form or SettingsForm(obj=actor.tenant)
    delete_form = delete_form or DeleteForm(prefix="delete")
    status = form_status(form, delete_form)
    page = render_template(
        "team/settings.html",
        form=form,
        transfer=transfer,
        delete_form=delete_form,
        seat_form=seat_limit_form(actor.tenant.seat_limit),
    )
    return page, status


@bp.route("/settings", methods=["GET", "POST"])
@role_required(members.SETTINGS)
def settings() -> Response | tuple[str, int]:
    actor = acting()
    # On POST the form holds only what was sent: a missing field is an error, not "unchanged".
    form = SettingsForm() if request.method == "POST" else SettingsForm(obj=actor.tenant)
    if form.validate_on_submit():
        try:
            members.update_settings(actor, name=form.name.data, slug=form.slug.data)
        except DomainError as exc:
            add_domain_error(form, exc, "name")
            return _render_settings(actor, form=form)
        notify("Team settings saved.", "success")
        return redirect(url_for("team.settings"))
    return _render_settings(actor, form=form)


@bp.post("/transfer")
@role_required(members.TRANSFER)
def transfer() -> Response:
    form = TransferForm(prefix="transfer")
    _validated(form)
    try:
        member_id = uuid.UUID(form.member_id.data)
    except ValueError:
        abort(404)
    member = members.transfer_ownership(acting(), member_id)
    notify(f"{member.user.name} is now an owner; you are an admin.", "success")
    return redirect(url_for("team.overview"))


@bp.post("/delete")
@role_required(members.DELETE)
def delete() -> Response | tuple[str, int]:
    actor = acting()
    form = DeleteForm(prefix="delete")
    if not form.validate_on_submit():
        return _render_settings(actor, delete_form=form)
    try:
        name = members.delete_team(actor, confirm_name=form.confirm_name.data)
    except DomainError as exc:
        add_domain_error(form, exc, "confirm_name")
        return _render_settings(actor, delete_form=form)
    log.info("team %s deleted by user %s", actor.tenant_id, actor.user_id)
    notify(f"The team {name} was deleted.", "info")
    return redirect(url_for("main.index"))


@bp.get("/audit")
@role_required(audit_events.VIEW)
def audit() -> tuple[str, int]:
    """The audit log in words, filtered by the URL (blueprints/audit_log.py)."""
    return render_audit(acting())
