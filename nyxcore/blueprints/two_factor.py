"""Two-factor authentication: enrolment and recovery codes (`/account/two-factor`), the log-in code step
(`/auth/two-factor`), and a team's requirement (`/team/two-factor`)."""

from __future__ import annotations

import time

from flask import (
    Blueprint,
    abort,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from nyxcore import authz, pending_login
from nyxcore.blueprints.auth import _next_url
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter
from nyxcore.forms import add_domain_error
from nyxcore.models import User
from nyxcore.services import accounts, sessions, two_factor
from nyxcore.web import form_page, form_status, notify

bp = Blueprint("two_factor", __name__)
# Each form that asks for the password again: a stolen session must not make it a guessing oracle.
PASSWORD_CHECKS = configured_limit("RATELIMIT_LOGIN")
# When the password was proved for the set-up on show: a wrong code shows the secret again only then.
ENROLMENT_KEY = "two_factor_enrolment"
ENROLMENT_SECONDS = 15 * 60


class PasswordForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class ConfirmCodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField("6-digit code from the app", validators=[DataRequired(), Length(max=64)])


class LoginCodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField("Authentication code or recovery code", validators=[DataRequired(), Length(max=64)])


class RequireForm(FlaskForm):  # type: ignore[misc]
    require = BooleanField("Require two-factor authentication")


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


def _private(page: str, status: int) -> Response:
    """A page showing a secret or recovery codes: never stored by a browser or a proxy."""
    response = make_response(page, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _settings_page(
    *, setup: PasswordForm | None = None, codes: PasswordForm | None = None, disable: PasswordForm | None = None
) -> tuple[str, int]:
    """The account's two-factor page; a form given here is shown with its errors (and the request rolls back)."""
    user = _user()
    setup = setup or PasswordForm()
    codes = codes or PasswordForm(prefix="codes")
    disable = disable or PasswordForm(prefix="disable")
    left = two_factor.recovery_codes_left(user) if user.two_factor_enabled_at else 0
    status = form_status(setup, codes, disable)
    page = render_template(
        "two_factor/settings.html", user=user, left=left, setup=setup, codes=codes, disable=disable
    )
    return page, status


def _setup_page(secret: str, form: ConfirmCodeForm) -> Response:
    uri = two_factor.provisioning_uri(secret, _user().email)
    status = form_status(form)
    page = render_template("two_factor/setup.html", form=form, secret=secret, qr_svg=two_factor.qr_svg(uri))
    return _private(page, status)


def _codes_page(codes: list[str], *, enrolled: bool) -> Response:
    return _private(render_template("two_factor/codes.html", codes=codes, enrolled=enrolled), 200)


def _proved_password(form: PasswordForm) -> bool:
    if not form.validate_on_submit():
        return False
    try:
        accounts.prove_password(_user(), form.password.data)
    except DomainError as exc:
        add_domain_error(form, exc, "password")
        return False
    return True


def _end_other_sessions() -> None:
    token = session.get(authz.SESSION_TOKEN_KEY)
    if isinstance(token, str):
        sessions.end_others(_user().id, token)


@bp.get("/account/two-factor")
@login_required  # type: ignore[untyped-decorator]
def settings() -> tuple[str, int]:
    return _settings_page()


@bp.route("/account/two-factor/setup", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(PASSWORD_CHECKS, methods=["POST"])
def setup() -> Response | tuple[str, int]:
    """POST: the password again, then a new secret. GET: its QR code, its text, and a code to confirm it."""
    if request.method == "GET":
        secret = two_factor.pending_secret(_user()) if _enrolment_started() else None
        if secret is None:
            return redirect(url_for("two_factor.settings"))
        return _setup_page(secret, ConfirmCodeForm())
    form = PasswordForm()
    if _proved_password(form):
        try:
            two_factor.start_enrolment(_user())
        except DomainError as exc:
            add_domain_error(form, exc, "password")
        else:
            session[ENROLMENT_KEY] = int(time.time())
            return redirect(url_for("two_factor.setup"))
    return _settings_page(setup=form)


def _enrolment_started() -> bool:
    """Whether the password was proved for a set-up in this session, in the last ENROLMENT_SECONDS."""
    started = session.get(ENROLMENT_KEY)
    return isinstance(started, int) and 0 <= time.time() - started <= ENROLMENT_SECONDS


@bp.post("/account/two-factor/confirm")
@login_required  # type: ignore[untyped-decorator]
def confirm() -> Response:
    """A code from the new secret turns two-factor on, ends the other sessions, shows the recovery codes once."""
    if not _enrolment_started():
        notify("The set-up expired. Enter your password to start again.", "warning")
        return redirect(url_for("two_factor.settings"))
    form = ConfirmCodeForm()
    if form.validate_on_submit():
        try:
            codes = two_factor.confirm_enrolment(_user(), form.code.data)
        except DomainError as exc:
            add_domain_error(form, exc, "code")
        else:
            session.pop(ENROLMENT_KEY, None)
            _end_other_sessions()
            return _codes_page(codes, enrolled=True)
    secret = two_factor.pending_secret(_user())
    if secret is None:
        notify("There is no set-up waiting for a code. Start again.", "warning")
        return redirect(url_for("two_factor.settings"))
    return _setup_page(secret, form)


@bp.post("/account/two-factor/recovery-codes")
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(PASSWORD_CHECKS)
def regenerate() -> Response | tuple[str, int]:
    """The password again, then 10 new recovery codes; the old ones stop working."""
    form = PasswordForm(prefix="codes")
    if _proved_password(form):
        try:
            codes = two_factor.regenerate_recovery_codes(_user())
        except DomainError as exc:
            add_domain_error(form, exc, "password")
        else:
            return _codes_page(codes, enrolled=False)
    return _settings_page(codes=form)


@bp.post("/account/two-factor/disable")
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(PASSWORD_CHECKS)
def disable() -> Response | tuple[str, int]:
    """The password again, then two-factor off and the other sessions ended."""
    form = PasswordForm(prefix="disable")
    if _proved_password(form):
        two_factor.disable(_user())
        _end_other_sessions()
        notify("Two-factor authentication is off. Your other sessions were logged out.", "success")
        return redirect(url_for("two_factor.settings"))
    return _settings_page(disable=form)


@bp.route("/auth/two-factor", methods=["GET", "POST"])
@limiter.limit(configured_limit("RATELIMIT_TWO_FACTOR"), methods=["POST"])
def login() -> Response | tuple[str, int]:
    """The log-in code step: a TOTP or recovery code after the password, then the session starts."""
    user_id = pending_login.pending_second_factor()
    if user_id is None:
        notify("Log in with your password first (the code step lasts 5 minutes).", "info")
        return redirect(url_for("auth.login", next=_next_url()))
    form = LoginCodeForm()
    if not form.validate_on_submit():
        return form_page("two_factor/login.html", form, next=_next_url())
    with authz.acting_as(user_id):
        user = two_factor.user_for_login(user_id)
        outcome = two_factor.check_login_code(user, form.code.data)
        if outcome is two_factor.LoginCheck.ACCEPTED:
            authz.sign_in(user, second_factor_proved=True)
            return redirect(_next_url() or url_for("team.overview"))
    if outcome is two_factor.LoginCheck.EXHAUSTED:
        pending_login.forget_second_factor()
        minutes = int(two_factor.LOCKOUT.total_seconds() // 60)
        notify(f"Too many wrong codes. Log in again in {minutes} minutes; until then no code is accepted.", "error")
        return redirect(url_for("auth.login", next=_next_url()))
    form.code.errors = [two_factor.WRONG_CODE + " Or enter one of your recovery codes."]
    # Not form_page: the count of wrong codes must be committed although the code was refused.
    return render_template("two_factor/login.html", form=form, next=_next_url()), 400


@bp.post("/team/two-factor")
@authz.role_required(two_factor.REQUIRE)
def team_requirement() -> Response:
    """Turn the active team's two-factor requirement on or off (owners)."""
    form = RequireForm()
    if not form.validate_on_submit():
        abort(400)
    required = bool(form.require.data)
    two_factor.set_team_requirement(authz.acting(), required=required)
    if required:
        notify("Members without two-factor authentication must now turn it on to open this team.", "success")
    else:
        notify("Two-factor authentication is no longer required in this team.", "success")
    return redirect(url_for("team.settings"))
