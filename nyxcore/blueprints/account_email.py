"""Changing one's e-mail address: `/account/email` asks (current password, new address), and the
link mailed to the new address confirms (`/account/email/confirm/<token>`: GET shows, POST changes).

The answer to asking is the same whether or not the new address has an account already
(services/email_change.py).
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email, Length

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter, per_account
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.services import account_tokens, email_change
from nyxcore.services.account_tokens import Purpose
from nyxcore.web import abandon_changes, form_page, notify

bp = Blueprint("account_email", __name__, url_prefix="/account/email")


class ChangeEmailForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        "New email address", validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)]
    )
    password = PasswordField("Current password", validators=[DataRequired(), Length(max=256)])


@bp.route("", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(configured_limit("RATELIMIT_EMAIL_CHANGE"), methods=["POST"], key_func=per_account)
def change() -> tuple[str, int]:
    """Ask to change the address: a link goes to the new one, a notice to the current one."""
    form = ChangeEmailForm()
    sent_to = None
    if form.validate_on_submit():
        try:
            sent_to = email_change.request_change(
                current_user._get_current_object(), password=form.password.data, new_email=form.email.data
            )
        except DomainError as exc:
            add_domain_error(form, exc, "email")
    return form_page("account_email/change.html", form, sent_to=sent_to)


def _refusal(title: str, message: str, status: int) -> tuple[str, int]:
    abandon_changes()
    again = url_for("account_email.change") if current_user.is_authenticated else url_for("auth.login")
    page = render_template(
        "auth/link_problem.html", title=title, message=message, again_url=again, again_label="Try again"
    )
    return page, status


@bp.route("/confirm/<change_token>", methods=["GET", "POST"])
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="account-link")
def confirm(change_token: str) -> Response | tuple[str, int]:
    """Confirm the new address (POST); GET only shows what would change."""
    form = ConfirmForm()
    try:
        with authz.presenting_account_token(change_token, Purpose.CHANGE_EMAIL) as found:
            account_tokens.check_usable(found)
            if current_user.is_authenticated and current_user.id != found.user_id:
                return _refusal(
                    "This link is for another account",
                    "This link is not for the account you are signed in with; nothing changed.",
                    403,
                )
            if not form.validate_on_submit():
                action = url_for("account_email.confirm", change_token=change_token)
                page = render_template("account_email/confirm.html", form=form, action=action, found=found)
                return page, 200
            user = email_change.confirm_change(found)
    except DomainError as exc:
        return _refusal("This link does not work", exc.message, exc.status_code)
    notify(f"Your e-mail address is now {user.email}.", "success")
    if current_user.is_authenticated:
        return redirect(url_for("account_email.change"), 303)
    return redirect(url_for("auth.login", email=user.email), 303)
