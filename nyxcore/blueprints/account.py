"""One's own account (`/account`): name, password, signed-in browsers, and deleting the account.

Any signed-in user, also one in no team: these pages act on the user, never on a team, so they
are guarded by `login_required` rather than by a team operation.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from flask import Blueprint, current_app, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from nyxcore import authz, timezones, user_agents
from nyxcore.confirmation import Confirmation, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter
from nyxcore.forms import MinPasswordLength, add_domain_error
from nyxcore.models import User
from nyxcore.services import account_deletion, account_settings, sessions
from nyxcore.services.account_deletion import TeamStanding
from nyxcore.templating import viewer_zone
from nyxcore.web import form_page, form_status, notify

bp = Blueprint("account", __name__, url_prefix="/account")
# Each of these forms checks a password: a stolen session must not make them a guessing oracle.
PASSWORD_CHECKS = configured_limit("RATELIMIT_LOGIN")
log = logging.getLogger("nyxcore.account")


class NameForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=account_settings.NAME_MAX)])


class ZoneForm(FlaskForm):  # type: ignore[misc]
    time_zone = StringField("Time zone", validators=[Length(max=timezones.ZONE_MAX)])


class PasswordForm(FlaskForm):  # type: ignore[misc]
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=256)])
    password = PasswordField("New password", validators=[DataRequired(), MinPasswordLength(), Length(max=256)])
    confirm_password = PasswordField(
        "New password again",
        validators=[DataRequired(), EqualTo("password", message="The two new passwords differ.")],
    )


class DeleteAccountForm(FlaskForm):  # type: ignore[misc]
    confirm_email = StringField("Type your e-mail address to confirm", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Your password", validators=[DataRequired(), Length(max=256)])


def _me() -> User:
    user: User = current_user._get_current_object()
    return user


def _token() -> str | None:
    token = session.get(authz.SESSION_TOKEN_KEY)
    return token if isinstance(token, str) else None


def _idle() -> timedelta:
    idle: timedelta = current_app.config["SESSION_IDLE_TIMEOUT"]
    return idle


def _signed_out(message: str) -> Response:
    logout_user()
    session.clear()
    notify(message, "info")
    return redirect(url_for("auth.login"))


def _render_account(
    *,
    name_form: NameForm | None = None,
    password_form: PasswordForm | None = None,
    zone_form: ZoneForm | None = None,
) -> tuple[str, int]:
    user = _me()
    # formdata=None: a form that was not the one posted starts from the account, not the request.
    name_form = name_form or NameForm(formdata=None, obj=user)
    password_form = password_form or PasswordForm(formdata=None)
    zone_form = zone_form or ZoneForm(formdata=None, obj=user)
    status = form_status(name_form, password_form, zone_form)
    page = render_template(
        "account/index.html",
        user=user,
        name_form=name_form,
        password_form=password_form,
        zone_form=zone_form,
        sessions=account_settings.session_summaries(user, current_token=_token(), idle=_idle()),
    )
    return page, status


@bp.get("")
@login_required  # type: ignore[untyped-decorator]
def index() -> tuple[str, int]:
    return _render_account()


@bp.post("/time-zone")
@login_required  # type: ignore[untyped-decorator]
def set_time_zone() -> Response | tuple[str, int]:
    form = ZoneForm()
    if form.validate_on_submit():
        try:
            zone = account_settings.set_time_zone(_me(), form.time_zone.data or "")
        except DomainError as exc:
            add_domain_error(form, exc, "time_zone")
        else:
            notify(
                f"Times are shown in {zone}." if zone else "Times are shown in your browser's time zone.",
                "success",
            )
            return redirect(url_for("account.index"))
    return _render_account(zone_form=form)


@bp.post("/name")
@login_required  # type: ignore[untyped-decorator]
def rename() -> Response | tuple[str, int]:
    form = NameForm()
    if form.validate_on_submit():
        try:
            account_settings.rename(_me(), form.name.data)
        except DomainError as exc:
            add_domain_error(form, exc, "name")
        else:
            notify("Your name was changed.", "success")
            return redirect(url_for("account.index"))
    return _render_account(name_form=form)


@bp.post("/password")
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(PASSWORD_CHECKS)
def change_password() -> Response | tuple[str, int]:
    form = PasswordForm()
    token = _token()
    if form.validate_on_submit() and token is not None:
        try:
            account_settings.change_password(
                _me(), current=form.current_password.data, new=form.password.data, keep_token=token
            )
        except DomainError as exc:
            add_domain_error(form, exc, "current_password")
        else:
            notify("Your password was changed. Any other browser signed in as you was signed out.", "success")
            return redirect(url_for("account.index"))
    return _render_account(password_form=form)


@bp.route("/sessions/<uuid:session_id>/revoke", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def revoke_session(session_id: uuid.UUID) -> ResponseReturnValue:
    """End one of the user's live sessions; any other id answers 404 and changes nothing."""
    if not is_confirmed():
        live = sessions.live_session(_me().id, session_id, idle=_idle())
        browser = user_agents.summarise(live.user_agent)
        zone = viewer_zone()
        seen = f"{zone.local(live.last_seen_at):%Y-%m-%d %H:%M} ({zone.name})"
        return confirm_page(
            Confirmation(
                title=f"Sign out {browser}?",
                consequences=(
                    f"{browser}, last seen {seen}, is signed out at its"
                    " next request: whoever uses it must log in again with your password.",
                ),
                button=f"Sign out {browser}",
                back=url_for("account.index"),
            )
        )
    record = sessions.end_by_id(_me().id, session_id, idle=_idle())
    if sessions.is_named_by(record, _token()):
        return _signed_out("This browser was signed out.")
    notify(f"{user_agents.summarise(record.user_agent)} was signed out.", "success")
    return redirect(url_for("account.index"))


@bp.route("/sessions/end-all", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def sign_out_everywhere() -> ResponseReturnValue:
    if not is_confirmed():
        return confirm_page(
            Confirmation(
                title="Sign out everywhere?",
                consequences=(
                    "Every browser where you are signed in is signed out, this one too:"
                    " you log in again here, and on your other devices.",
                ),
                button="Sign out everywhere",
                back=url_for("account.index"),
            )
        )
    sessions.end_all(_me().id)
    return _signed_out("You were signed out everywhere, in this browser too.")


def _standings() -> list[TeamStanding]:
    """How the user stands in each of their teams, each read in that team's context."""
    found = []
    for membership in authz.all_my_teams():
        with authz.acting_in(membership) as actor:
            found.append(account_deletion.standing(actor))
    return found


def _delete_account(user: User, form: DeleteAccountForm, standings: list[TeamStanding]) -> None:
    """Delete the account: refused while it is the last owner of a team with others, then confirmed.

    The tenant context is the entry point's to set, so this view (not a service, not a SECURITY
    DEFINER function) enters each of the user's teams in turn (`authz.acting_in`) and has the team
    services there leave it or, when the user is its only member, delete it; then it deletes the
    user as themselves. All in the request's one transaction: a refusal anywhere rolls back all.
    """
    account_deletion.refuse_while_blocked(standings)
    account_deletion.confirm(user, email=form.confirm_email.data, password=form.password.data)
    for membership in authz.all_my_teams():
        with authz.acting_in(membership) as actor:
            account_deletion.leave_or_delete_team(actor)
    with authz.acting_as(user.id):
        account_deletion.delete_user(user)


@bp.route("/delete", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(PASSWORD_CHECKS, methods=["POST"])
def delete() -> Response | tuple[str, int]:
    user = _me()
    form = DeleteAccountForm()
    standings = _standings()
    if form.validate_on_submit():
        try:
            _delete_account(user, form, standings)
        except DomainError as exc:
            add_domain_error(form, exc, "password")
        else:
            log.info("account %s deleted by its user", user.id)
            return _signed_out("Your account was deleted.")
    return form_page("account/delete.html", form, standings=standings, user=user)
