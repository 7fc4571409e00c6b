"""The active team: members, roles, settings, ownership, audit log (`/team/...`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import DateField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from nyxcore.authz import acting, can, role_required
from nyxcore.blueprints.audit_log import render_audit
from nyxcore.blueprints.invite import pending_invitations
from nyxcore.blueprints.member_rows import RowParts, member_rows
from nyxcore.blueprints.seats import seat_limit_form
from nyxcore.confirmation import Confirmation, back_on_failure, confirm_page, is_confirmed
from nyxcore.errors import DomainError, InvalidInput
from nyxcore.forms import add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.pagination import Position, page_number
from nyxcore.roles import TenantRole
from nyxcore.services import audit as audit_events
from nyxcore.services import endings, invitations, member_list, members, notices, seats
from nyxcore.services.invitations.display import article
from nyxcore.tenancy import Actor
from nyxcore.web import carried_errors, form_status, notify, redirect_after_failure

bp = Blueprint("team", __name__, url_prefix="/team")
NAV = (NavEntry("Team", "team.overview", 10), NavEntry("Audit log", "team.audit", 90))
NO_MEMBER_CHOSEN = "Choose the member who becomes the owner."
log = logging.getLogger("nyxcore.team")
ROLE_CHOICES = [SelectChoice(role.value, role.label) for role in TenantRole]
PENDING_SHOWN = 10  # open invitations listed on the team page


class RoleForm(FlaskForm):  # type: ignore[misc]
    role = SelectField("Role", choices=ROLE_CHOICES, validators=[DataRequired()])


class EndDateForm(FlaskForm):  # type: ignore[misc]
    # Empty clears the end date.
    ends_on = DateField("Last day", validators=[Optional()])


class TransferForm(FlaskForm):  # type: ignore[misc]
    # Sent by GET to the confirm page, so no CSRF token; the confirmed POST carries one.
    # Any current member is a valid choice; the service checks membership (another team's id is a 404).
    member_id = SelectField("New owner", choices=[], validators=[DataRequired()], validate_choice=False)


class SettingsForm(FlaskForm):  # type: ignore[misc]
    # The slug is not offered: no address or page uses it (it only keeps teams apart in the database).
    name = StringField("Team name", validators=[DataRequired(), Length(max=80)])


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
    # Admins see the first few pending invitations here; the invitations page has them all. The
    # member list's statement reads them too (one round trip fewer), else pending_invitations does.
    shows_pending = invitations.MANAGE.permits(actor.role, email_verified=actor.email_verified)
    page = member_list.list_members(
        actor, at=Position.from_args(request.args), search=search, pending=PENDING_SHOWN if shows_pending else 0
    )
    pending: dict[str, Any] = {}
    if shows_pending:
        pending = pending_invitations(actor, page=1, per_page=PENDING_SHOWN, read=page.pending)
    # The rows are filled into markup made once per page (blueprints/member_rows.py).
    parts = RowParts.for_page(
        actor,
        show_two_factor=can("two_factor.see_members"),
        show_actions=can("members.manage"),
        show_end=can("members.set_end"),
    )
    return render_template(
        "team/overview.html",
        tenant=actor.tenant,
        page=page,
        seats=seats.SeatUsage(  # open invitations are None (not counted) only for a team without a limit
            page.members, page.open_invitations or 0, actor.tenant.seat_limit, capped=page.members_capped
        ),
        search=search,
        parts=parts,
        member_rows=member_rows(page.items, parts),
        sole_owner=member_list.sole_owner_on(page, actor, searched=bool(search)),
        **pending,
    )


@bp.post("/members/<uuid:member_id>/role")
@role_required(members.MANAGE)
@back_on_failure("team.overview")
def change_role(member_id: uuid.UUID) -> Response:
    form = RoleForm()
    _validated(form)
    role = TenantRole(form.role.data)
    before = members.get_member(member_id).role
    member = members.change_role(acting(), member_id, role)
    label = role.label.lower()
    if before is role:
        notify(f"{member.user.name} already is {article(role)} {label}.", "info")
    else:
        notify(f"{member.user.name} is now {article(role)} {label}.", "success")
    return redirect(url_for("team.overview"))


@bp.route("/members/<uuid:member_id>/remove", methods=["GET", "POST"])
@role_required(members.MANAGE)
@back_on_failure("team.overview")
def remove_member(member_id: uuid.UUID) -> ResponseReturnValue:
    actor = acting()
    if not is_confirmed():  # the confirmed POST's service call looks the member up (and checks) itself
        member = members.removable(actor, member_id)
        name, team = member.user.name, actor.tenant.name
        return confirm_page(
            Confirmation(
                title=f"Remove {name} from {team}?",
                consequences=(
                    f"{name} loses access to {team}'s members, notes, wardrobe and GitHub at once,"
                    " and the invitations they sent stop working.",
                    "To let them back in, invite them again.",
                ),
                button=f"Remove {name}",
                back=url_for("team.overview"),
            )
        )
    user = members.remove_member(actor, member_id)
    notify(f"{user.name} was removed from the team.", "success")
    return redirect(url_for("team.overview"))


@bp.post("/members/<uuid:member_id>/end")
@role_required(endings.SET_END)
@back_on_failure("team.overview")
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


@bp.route("/leave", methods=["GET", "POST"])
@role_required(members.LEAVE)
@back_on_failure("team.overview")
def leave() -> ResponseReturnValue:
    actor = acting()
    if not is_confirmed():
        team = actor.tenant.name
        return confirm_page(
            Confirmation(
                title=f"Leave {team}?",
                consequences=(
                    f"You lose access to {team}'s members, notes, wardrobe and GitHub at once,"
                    " and the invitations you sent stop working.",
                    "You keep your account and your other teams. To come back, you need a new invitation.",
                ),
                button=f"Leave {team}",
                back=url_for("team.overview"),
                refusal=members.LAST_OWNER if members.is_sole_owner(actor) else None,
            )
        )
    # "You left <team>." is said by the notice the next request (the redirect) takes: services/notices.py.
    members.leave_team(actor)
    return redirect(url_for("main.index"), code=303)


def _render_settings(
    actor: Actor, *, form: SettingsForm | None = None, transfer: TransferForm | None = None
) -> tuple[str, int]:
    transfer = transfer or TransferForm(prefix="transfer", meta={"csrf": False})
    me = str(actor.member_id)  # the list's ids are text
    others = [
        SelectChoice(m.id, f"{m.name} ({m.role.label})")
        for m in member_list.list_members(actor, per_page=500).items
        if m.id != me
    ]
    # Nobody is chosen until the owner chooses: a placeholder first, so one click makes no one owner.
    transfer.member_id.choices = [SelectChoice("", "Choose a member"), *others] if others else []
    form = form or SettingsForm(obj=actor.tenant)
    status = form_status(form, transfer)
    page = render_template(
        "team/settings.html",
        form=form,
        transfer=transfer,
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
            members.update_settings(actor, name=form.name.data)
        except DomainError as exc:
            add_domain_error(form, exc, "name")
            return _render_settings(actor, form=form)
        notify("Team settings saved.", "success")
        return redirect(url_for("team.settings"))
    return _render_settings(actor, form=form)


@bp.route("/transfer", methods=["GET", "POST"])
@role_required(members.TRANSFER)
@back_on_failure("team.settings")
def transfer() -> ResponseReturnValue:
    """Choose the new owner on the settings page (a GET form), confirm here, then transfer (POST)."""
    actor = acting()
    # The confirmed POST acts on the member its form names, never on the query of its address.
    sent = request.form if request.method == "POST" else request.args
    form = TransferForm(sent, prefix="transfer", meta={"csrf": False})
    if not form.member_id.data:
        form.member_id.errors = [NO_MEMBER_CHOSEN]
        return _render_settings(actor, transfer=form)
    try:
        member = members.get_member(uuid.UUID(form.member_id.data))
    except ValueError:
        abort(404)
    if member.id == actor.member_id:
        return redirect_after_failure(NO_MEMBER_CHOSEN, url_for("team.settings"))
    if not is_confirmed():
        name, team = member.user.name, actor.tenant.name
        return confirm_page(
            Confirmation(
                title=f"Make {name} the owner of {team}?",
                consequences=(
                    f"{name} becomes an owner and you become an admin: you can no longer change the"
                    " team's settings, GitHub connection or owners, nor delete the team.",
                    f"Only an owner ({name}) can make you an owner again.",
                ),
                button=f"Make {name} the owner",
                back=url_for("team.settings"),
                hidden={form.member_id.name: str(member.id)},
            )
        )
    member = members.transfer_ownership(actor, member.id)
    notify(f"{member.user.name} is now an owner; you are an admin.", "success")
    return redirect(url_for("team.overview"))


@bp.route("/delete", methods=["GET", "POST"])
@role_required(members.DELETE)
@back_on_failure("team.delete", field="confirm_name")
def delete() -> ResponseReturnValue:
    actor = acting()
    form = DeleteForm(prefix="delete")
    if not is_confirmed():
        carried_errors(form)
        team = actor.tenant.name
        return confirm_page(
            Confirmation(
                title=f"Delete {team}?",
                consequences=(
                    f"{team} is deleted with its members' access, invitations, join links, notes,"
                    " wardrobe, GitHub connection and audit log. It cannot be undone.",
                    "Type the team's name to confirm.",
                ),
                button=f"Delete {team}",
                back=url_for("team.settings"),
                form=form,
            )
        )
    name = members.delete_team(actor, confirm_name=form.confirm_name.data or "")
    log.info("team %s deleted by user %s", actor.tenant_id, actor.user_id)
    notify(f"The team {name} was deleted.", "info")
    return redirect(url_for("main.index"))


@bp.get("/audit")
@role_required(audit_events.VIEW)
def audit() -> tuple[str, int]:
    """The audit log in words, filtered by the URL (blueprints/audit_log.py)."""
    return render_audit(acting())
