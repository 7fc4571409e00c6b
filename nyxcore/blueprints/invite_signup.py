"""Sign up through a magic link, in one step: `/invite/<token>/signup`.

The address is the invitation's and cannot be changed; the new account is verified, gets no
personal team, joins the inviting team with the invited role and is signed in
(services/invitations/signing_up.py). Someone whose address already has an account logs in and
accepts on the invitation page instead. Rate limited with the magic link (one budget).
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from nyxcore import authz
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, db, limiter
from nyxcore.forms import MinPasswordLength, add_domain_error
from nyxcore.models import User
from nyxcore.services import invitations
from nyxcore.web import form_status, notify

bp = Blueprint("invite_signup", __name__)


class InvitedSignupForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    password = PasswordField("Password", validators=[DataRequired(), MinPasswordLength(), Length(max=256)])


@bp.route("/invite/<token>/signup", methods=["GET", "POST"])
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="magic-link")
def signup(token: str) -> Response | tuple[str, int]:
    """Create an account for the invited address and join the team with it."""
    if current_user.is_authenticated:
        return redirect(url_for("invite.show", token=token))
    form = InvitedSignupForm()
    with authz.presenting_invitation(token):
        invitation = invitations.acceptance(token, None).invitation  # 404/410 for a dead link
    if form.validate_on_submit():
        try:
            with authz.presenting_invitation_as_new_account(token) as user_id:
                accepted = invitations.sign_up_and_accept(
                    token, user_id=user_id, name=form.name.data, password=form.password.data
                )
                user = db.session.get(User, user_id)
                assert user is not None  # just made, in this transaction
                authz.sign_in(user)
        except DomainError as exc:
            add_domain_error(form, exc, "name")
        else:
            authz.activate_team(accepted.membership)
            role = accepted.membership.role.label.lower()
            notify(f"Welcome to {accepted.membership.tenant.name}. You joined as {role}.", "success")
            return redirect(url_for("team.overview"), 303)
    status = form_status(form)
    page = render_template(
        "invite/signup.html",
        form=form,
        invitation=invitation,
        action=url_for("invite_signup.signup", token=token),
        login_url=url_for("auth.login", next=url_for("invite.show", token=token), email=invitation.email),
    )
    return page, status
