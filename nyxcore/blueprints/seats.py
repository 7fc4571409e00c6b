"""The team's seat limit (`/team/settings/seats`, owners): set on the settings page, shown here again
with what is wrong when it cannot be saved."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import IntegerField
from wtforms.validators import Optional

from nyxcore.authz import acting, role_required
from nyxcore.errors import DomainError
from nyxcore.forms import add_domain_error
from nyxcore.services import seats
from nyxcore.web import form_status, notify

bp = Blueprint("seats", __name__, url_prefix="/team/settings")


class SeatLimitForm(FlaskForm):  # type: ignore[misc]
    seat_limit = IntegerField("Seats (empty for no limit)", validators=[Optional()])


@bp.route("/seats", methods=["GET", "POST"], endpoint="limit")
@role_required(seats.SETTINGS)
def limit() -> Response | tuple[str, int]:
    """Set or clear the seat limit: members plus open invitations may not pass it."""
    actor = acting()
    # On POST the form holds only what was sent: an empty (or missing) number means no limit.
    form = SeatLimitForm(prefix="seats") if request.method == "POST" else seat_limit_form(actor.tenant.seat_limit)
    if form.validate_on_submit():
        try:
            tenant = seats.set_limit(actor, form.seat_limit.data)
        except DomainError as exc:
            add_domain_error(form, exc, "seat_limit")
        else:
            if tenant.seat_limit is None:
                notify("This team has no seat limit now.", "success")
            else:
                notify(f"This team has {tenant.seat_limit} seats now.", "success")
            return redirect(url_for("team.settings"))
    status = form_status(form)
    return render_template("seats/limit.html", seat_form=form), status


def seat_limit_form(limit: int | None) -> SeatLimitForm:
    """The form as the settings page shows it, with the current limit."""
    return SeatLimitForm(prefix="seats", data={"seat_limit": limit})
