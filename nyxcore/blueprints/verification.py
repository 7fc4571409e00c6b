"""Verifying an address: the link from the sign-up mail, and asking for a new one.

`GET /auth/verify/<token>` shows a button and changes nothing (mail scanners follow links); the
POST proves the address and signs the person in if nobody is signed in here. Someone signed in
as another account is told the link is not theirs, and nothing changes.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers.response import Response

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter, per_account
from nyxcore.forms import ConfirmForm
from nyxcore.models import TenantMember
from nyxcore.services import account_tokens, teams, verification
from nyxcore.services.account_tokens import Purpose
from nyxcore.web import abandon_changes, notify

bp = Blueprint("verification", __name__, url_prefix="/auth/verify")


def _refusal(title: str, message: str, status: int, *, again: bool) -> tuple[str, int]:
    abandon_changes()
    page = render_template(
        "auth/link_problem.html",
        title=title,
        message=message,
        again_url=url_for("auth.login") if again else None,
        again_label="Log in to ask for a new link",
    )
    return page, status


@bp.route("/<verify_token>", methods=["GET", "POST"])
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="account-link")
def verify(verify_token: str) -> Response | tuple[str, int]:
    """Confirm the address (POST); signs in whoever holds the link if nobody is signed in here."""
    form = ConfirmForm()
    membership: TenantMember | None = None
    try:
        with authz.presenting_account_token(verify_token, Purpose.VERIFY_EMAIL) as found:
            account_tokens.check_usable(found)
            if current_user.is_authenticated and current_user.id != found.user_id:
                return _refusal(
                    "This link is for another account",
                    "This verification link is not for the account you are signed in with; nothing changed. "
                    "Log out and open it again.",
                    403,
                    again=False,
                )
            if not form.validate_on_submit():
                action = url_for("verification.verify", verify_token=verify_token)
                return render_template("auth/verify.html", form=form, action=action), 200
            user = verification.verify(found)
            # The link proves the address, not the second factor: with two-factor on, log in as usual.
            second_factor = not current_user.is_authenticated and user.two_factor_enabled_at is not None
            if not current_user.is_authenticated and not second_factor:
                authz.sign_in(user)
                membership = teams.first_joined(user.id)  # the team a new session starts in
    except DomainError as exc:
        return _refusal("This verification link does not work", exc.message, exc.status_code, again=True)
    if second_factor:
        notify(f"Your address {user.email} is verified. Log in to continue.", "success")
        return redirect(url_for("auth.login"), 303)
    if membership is not None:
        authz.activate_team(membership)
    notify(f"Your address {user.email} is verified. Welcome, {user.name}.", "success")
    return redirect(url_for("team.overview"), 303)


@bp.post("/resend")
@login_required  # type: ignore[untyped-decorator]
@limiter.limit(configured_limit("RATELIMIT_VERIFY_RESEND"), key_func=per_account)
def resend() -> Response:
    """A new verification link for the signed-in account."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if verification.resend(current_user._get_current_object()):
        notify(f"We sent a new link to {current_user.email}. It works for 48 hours.", "success")
    else:
        notify("Your address is already verified.", "info")
    return redirect(url_for("team.overview"), 303)
