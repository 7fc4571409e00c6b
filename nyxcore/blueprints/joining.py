"""Your teams and the teams you can join (`/teams/`): join or ask to join by your address's domain.

A team appears under "Teams you can join" when it verified the domain of your verified address
(services/domain_joining.py); you learn its name and nothing else. Joining runs in that team's
context only once the team was found joinable, as following a magic link does.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, redirect, render_template, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers.response import Response

from nyxcore import authz
from nyxcore.confirmation import back_on_failure
from nyxcore.forms import ConfirmForm
from nyxcore.models import TenantMember, User
from nyxcore.services import domain_joining
from nyxcore.web import notify

bp = Blueprint("joining", __name__, url_prefix="/teams")


@bp.get("/")
@login_required  # type: ignore[untyped-decorator]
def index() -> str:
    """The user's teams, and those they can join by their address's domain."""
    user: User = current_user._get_current_object()
    return render_template(
        "joining/index.html",
        mine=authz.all_my_teams(),
        joinable=domain_joining.joinable_teams(user),
        verified=user.email_verified_at is not None,
        confirm_form=ConfirmForm(),
    )


@bp.post("/<uuid:tenant_id>/join")
@login_required  # type: ignore[untyped-decorator]
@back_on_failure("joining.index")
def join(tenant_id: uuid.UUID) -> Response:
    """Join the team at once or ask to, as its domain says; any other team answers 404."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    user: User = current_user._get_current_object()
    team = domain_joining.find_joinable(user, tenant_id)
    with authz.acting_as(user.id, tenant_id=team.tenant_id):
        outcome = domain_joining.join_or_ask(user, team)
    if isinstance(outcome, TenantMember):
        authz.activate_team(outcome)
        notify(f"You joined {team.name} as {outcome.role.label.lower()}.", "success")
        return redirect(url_for("team.overview"))
    notify(f"You asked to join {team.name}. Its admins will decide; we will tell you by mail.", "success")
    return redirect(url_for("joining.index"))
