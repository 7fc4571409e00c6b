"""Accounts: sign up (and the check-inbox page it leads to), log in, log out."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import current_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from nyxcore import authz, pending_login
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter
from nyxcore.forms import MinPasswordLength, add_domain_error
from nyxcore.services import accounts
from nyxcore.services import signup as signup_service
from nyxcore.web import form_page, is_safe_next, notify

bp = Blueprint("auth", __name__, url_prefix="/auth")
_MAX_NEXT = 2048
CHECK_INBOX_KEY = "signup_address"  # on the session: the address the check-inbox page names


class SignupForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    email = EmailField(
        "Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)]
    )
    password = PasswordField("Password", validators=[DataRequired(), MinPasswordLength(), Length(max=256)])


class LoginForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


def _next_url() -> str | None:
    target = request.args.get("next") or request.form.get("next")
    return target if is_safe_next(target) else None


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(configured_limit("RATELIMIT_SIGNUP"), methods=["POST"])
def signup() -> Response | tuple[str, int]:
    """Sign up; a new address and a taken one get the same answer (services/signup.py)."""
    form = SignupForm()
    if form.validate_on_submit():
        try:
            with authz.acting_for_a_new_account() as (user_id, team_id):
                address = signup_service.sign_up(
                    user_id=user_id,
                    team_id=team_id,
                    name=form.name.data,
                    email=form.email.data,
                    password=form.password.data,
                )
        except DomainError as exc:
            add_domain_error(form, exc, "email")
        else:
            session[CHECK_INBOX_KEY] = address
            return redirect(url_for("auth.check_inbox"), 303)
    return form_page("auth/signup.html", form)


@bp.get("/check-inbox")
def check_inbox() -> str:
    """Where sign-up lands: the link to finish it is in the mail."""
    return render_template("auth/check_inbox.html", address=session.get(CHECK_INBOX_KEY))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(configured_limit("RATELIMIT_LOGIN"), methods=["POST"])
def login() -> Response | tuple[str, int]:
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_next_url() or url_for("team.overview"))
    form = LoginForm()
    if request.method == "GET" and request.args.get("email"):
        form.email.data = request.args["email"]
    if form.validate_on_submit():
        proved = accounts.check_password(email=form.email.data, password=form.password.data)
        if proved is None:
            form.password.errors = ["Invalid email or password."]
        else:
            with authz.acting_as(proved.user_id):
                user = accounts.signed_in_user(proved, form.password.data)
                if user.two_factor_enabled_at is not None:  # no session until the code step (blueprints/two_factor.py)
                    pending_login.await_second_factor(user.id)
                    return redirect(url_for("two_factor.login", next=_next_url()))
                authz.sign_in(user)
            return redirect(_next_url() or url_for("team.overview"))
    return form_page("auth/login.html", form, next=_next_url())


@bp.post("/logout")
def logout() -> Response:
    # "Log out and continue" (an invitation for another account) comes back to where it was: a path
    # on this site. Anything else is refused before the session ends (nothing changed).
    target = request.form.get("next")
    if target is not None and (len(target) > _MAX_NEXT or not is_safe_next(target)):
        abort(400)
    authz.end_this_session()  # the cookie, if replayed, signs in no one
    logout_user()
    session.clear()
    notify("You are logged out.", "info")
    return redirect(target or url_for("auth.login"))
