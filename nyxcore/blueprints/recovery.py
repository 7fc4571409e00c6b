"""Password reset by e-mail: `/auth/forgot` asks for a link, `/auth/reset/<token>` uses it.

Asking answers the same page for any address (services/recovery.py). The link's GET only shows
the form (mail scanners follow links); the POST sets the password as the link's account, signs
this browser and every other one out, and sends to log in. web.py sends
`Referrer-Policy: strict-origin` on the pages with a token in their path.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, session, url_for
from flask_login import logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email, Length

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter
from nyxcore.forms import MinPasswordLength
from nyxcore.services import account_tokens, recovery
from nyxcore.services.account_tokens import Purpose
from nyxcore.web import abandon_changes, form_page, notify

bp = Blueprint("recovery", __name__, url_prefix="/auth")


class ForgotForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        "Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)]
    )


class ResetForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField(
        "New password", validators=[DataRequired(), MinPasswordLength(), Length(max=256)]
    )


def link_problem(exc: DomainError) -> tuple[str, int]:
    """The page for a dead reset link (404 unknown, 410 used or expired), offering a new one."""
    abandon_changes()
    page = render_template(
        "auth/link_problem.html",
        title="This reset link does not work",
        message=exc.message,
        again_url=url_for("recovery.forgot"),
        again_label="Ask for a new link",
    )
    return page, exc.status_code


@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(configured_limit("RATELIMIT_PASSWORD_RESET"), methods=["POST"])
def forgot() -> tuple[str, int]:
    """Ask for a reset link. The same page whether or not an account uses the address."""
    form = ForgotForm()
    sent_to = None
    if form.validate_on_submit():
        sent_to = recovery.request_password_reset(form.email.data)
    return form_page("auth/forgot.html", form, sent_to=sent_to)


@bp.route("/reset/<reset_token>", methods=["GET", "POST"])
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="account-link")
def reset(reset_token: str) -> Response | tuple[str, int]:
    """The new-password form (GET never uses the link); POST sets it and signs everyone out."""
    form = ResetForm()
    try:
        with authz.presenting_account_token(reset_token, Purpose.RESET_PASSWORD) as found:
            account_tokens.check_usable(found)
            if not form.validate_on_submit():
                return form_page("auth/reset.html", form, action=url_for("recovery.reset", reset_token=reset_token))
            recovery.reset_password(found, form.password.data)
    except DomainError as exc:
        return link_problem(exc)
    authz.end_this_session()  # whoever was signed in here (the link's account's sessions all ended)
    logout_user()
    session.clear()
    notify("Your password was changed, and every browser signed in to your account was signed out. "
           "Log in with the new password.", "success")
    return redirect(url_for("auth.login"), 303)
