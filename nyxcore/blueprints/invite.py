"""Invitations: the admin side under /team/invitations and the magic link at /invite/<token>.

`GET /invite/<token>` only shows the invitation: mail scanners and link previews fetch links, so
nothing is consumed until the invitee presses the button (`POST`, with CSRF). Both are rate
limited per client address (RATELIMIT_MAGIC_LINK, one shared budget). web.py sends
`Referrer-Policy: strict-origin` for every endpoint of this blueprint: the token is in the path, and
over HTTPS the CSRF check needs the origin in the Referer of the accept form.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import SelectChoice, SelectField, TextAreaField
from wtforms.validators import AnyOf, DataRequired, Length

from nyxcore import authz
from nyxcore.authz import acting, role_required
from nyxcore.blueprints.pending_rows import pending_rows
from nyxcore.confirmation import Confirmation, back_on_failure, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter, login_manager
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.pagination import page_number
from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services import invitations, mail
from nyxcore.services.invitations import InviteOutcome, Standing
from nyxcore.templating import url_pattern, viewer_zone
from nyxcore.tenancy import Actor
from nyxcore.web import form_status, keeps_typed_input, notify

bp = Blueprint("invite", __name__)
NAV = (NavEntry("Invitations", "invite.invitations", 30),)


class InviteForm(FlaskForm):  # type: ignore[misc]
    emails = TextAreaField(
        "Email addresses",
        validators=[DataRequired(message="Enter at least one email address."), Length(max=20_000)],
        render_kw={"spellcheck": "false", "autocapitalize": "off"},
    )
    # Choices are the actor's grantable roles (set per request); any role passes here, and the
    # service refuses one the actor may not grant with a 403.
    role = SelectField(
        "Role",
        default=TenantRole.MEMBER.value,
        validate_choice=False,
        validators=[DataRequired(), AnyOf([role.value for role in TenantRole], message="Choose a role.")],
    )


def pending_invitations(
    actor: Actor, *, page: int, per_page: int = invitations.PER_PAGE, read: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What templates/invite/_pending.html needs: a page of open invitations and how to show them.

    Each row carries its delivery and where it stands; who may manage which role, and the rows'
    URLs, are worked out once for the page (from this request's actor: nothing outlives it).
    `read`: the first page's rows, already read with the team page's member list (MemberPage.pending).
    """
    if read is not None and page == 1:
        listed = invitations.pending_from_json(read, per_page)
    else:
        listed = invitations.list_pending(actor, page=page, per_page=per_page)
    rows = pending_rows(
        listed.items,
        manageable=frozenset(role for role in TenantRole if can_manage_role(actor.role, role, role)),
        renew_url=url_pattern("invite.renew", "invitation_id"),
        resend_url=url_pattern("invite.resend", "invitation_id"),
        revoke_url=url_pattern("invite.revoke", "invitation_id"),
    )
    return {
        "pending": listed,
        "pending_rows": rows,  # blueprints/pending_rows.py
        "lifecycle": invitations.lifecycle,  # the closed list's rows (ORM invitations)
        "max_attempts": mail.MAX_ATTEMPTS,
    }


# The team page links here by this endpoint name.
@bp.route("/team/invitations", methods=["GET", "POST"], endpoint="invitations")
@role_required(invitations.MANAGE)
@keeps_typed_input
def manage_invitations() -> tuple[str, int]:
    """Invite people (one address or many) and list the open invitations with their delivery state."""
    actor = acting()
    form = InviteForm()
    form.role.choices = [SelectChoice(role.value, role.label) for role in grantable_roles(actor.role)]
    results: list[invitations.InviteResult] | None = None
    if form.validate_on_submit():
        try:
            results = invitations.invite_many(actor, form.emails.data, TenantRole(form.role.data))
        except DomainError as exc:
            add_domain_error(form, exc, "emails")  # the request rolls back: nobody is invited
        else:
            form.emails.data = "\n".join(r.address for r in results if r.outcome is InviteOutcome.INVALID)
    status = form_status(form)
    page = render_template(
        "invite/invitations.html", form=form, results=results, confirm_form=ConfirmForm(), **_live_pending(actor)
    )
    return page, status


@bp.get("/team/invitations/delivery")
@role_required(invitations.MANAGE)
def delivery_state() -> str:
    """The invitations' table alone, which static/refresh.js swaps in while a mail is still queued."""
    return render_template("invite/_pending_live.html", **_live_pending(acting()))


def _live_pending(actor: Actor) -> dict[str, Any]:
    """The full pending list, whether mail is still queued (the page then refreshes it), and when this was read."""
    context = pending_invitations(actor, page=page_number(request.args.get("page")))
    zone = viewer_zone()
    context.update(
        pending_full_list=True,
        closed=invitations.list_closed(),
        waiting=any(inv.lifecycle == "queued" for inv in context["pending"].items),
        checked_at=f"{zone.local(datetime.now(UTC)):%H:%M:%S} ({zone.name})",
    )
    return context


@bp.post("/team/invitations/<uuid:invitation_id>/resend")
@role_required(invitations.MANAGE)
@back_on_failure("invite.invitations")
def resend(invitation_id: uuid.UUID) -> Response:
    if not ConfirmForm().validate_on_submit():
        abort(400)
    invitation = invitations.resend(acting(), invitation_id)
    notify(
        f"A new invitation is on its way to {invitation.email}; the previous link no longer works.", "success"
    )
    return redirect(url_for("invite.invitations"))


@bp.post("/team/invitations/<uuid:invitation_id>/renew")
@role_required(invitations.MANAGE)
@back_on_failure("invite.invitations")
def renew(invitation_id: uuid.UUID) -> Response:
    """An expired invitation: a new link, a new expiry and a new email; the old link answers 410."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    invitation = invitations.renew(acting(), invitation_id)
    notify(
        f"The invitation for {invitation.email} was renewed: a new link is on its way, valid until "
        f"{invitations.utc(invitation.expires_at)}; the expired link no longer works.",
        "success",
    )
    return redirect(url_for("invite.invitations"))


@bp.route("/team/invitations/<uuid:invitation_id>/revoke", methods=["GET", "POST"])
@role_required(invitations.MANAGE)
@back_on_failure("invite.invitations")
def revoke(invitation_id: uuid.UUID) -> ResponseReturnValue:
    actor = acting()
    if not is_confirmed():  # the confirmed POST's service call looks the invitation up (and locks it) itself
        invitation = invitations.revocable(actor, invitation_id)
        return confirm_page(
            Confirmation(
                title=f"Revoke the invitation for {invitation.email}?",
                consequences=(
                    f"The invitation link sent to {invitation.email} stops working at once;"
                    " an e-mail not sent yet is not sent.",
                    f"To let them in later, invite {invitation.email} again.",
                ),
                button="Revoke the invitation",
                back=url_for("invite.invitations"),
            )
        )
    invitation = invitations.revoke(actor, invitation_id)
    notify(f"The invitation for {invitation.email} was revoked; its link no longer works.", "success")
    return redirect(url_for("invite.invitations"))


@bp.get("/invite/<token>")
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="magic-link")
def show(token: str) -> tuple[str, int]:
    """The invitation: team, inviter and role, and what the visitor can do. Never consumes it."""
    user = current_user if current_user.is_authenticated else None
    with authz.presenting_invitation(token) as found:
        acceptance = invitations.acceptance(token, user, found=found)
    invitation = acceptance.invitation
    wrong = acceptance.standing is Standing.WRONG_ACCOUNT
    here = url_for("invite.show", token=token)
    page = render_template(
        "invite/accept.html",
        invitation=invitation,
        standing=acceptance.standing.value,
        accept_url=url_for("invite.accept", token=token),
        signup_url=url_for("invite_signup.signup", token=token),
        login_url=url_for("auth.login", next=here, email=invitation.email),
        refusal=invitations.wrong_account_message(invitation, user) if wrong and user else None,
        here=here,
        form=ConfirmForm(),
    )
    return page, 403 if wrong else 200


@bp.post("/invite/<token>")
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="magic-link")
def accept(token: str) -> Response:
    """Accept the invitation as the signed-in user, then make its team the active one."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    with authz.presenting_invitation(token) as found:
        if not current_user.is_authenticated:
            invitations.acceptance(token, None, found=found)  # unknown or dead links: 404/410 before any login
            response: Response = login_manager.unauthorized()
            return response
        accepted = invitations.accept(token, current_user, found=found)
    authz.activate_team(accepted.membership)
    team = accepted.membership.tenant.name
    if accepted.joined:
        notify(f"Welcome to {team}. You joined as {accepted.membership.role.label.lower()}.", "success")
    else:
        notify(f"You are already a member of {team}.", "info")
    return redirect(url_for("team.overview"))


@bp.get("/dev/outbox")
@login_required  # type: ignore[untyped-decorator]
def dev_outbox() -> str:
    """Development only: the console mail sent to you, or for a team whose invitations you manage."""
    config = current_app.config
    if config["NYXCORE_ENV"] == "production" or not config["SHOW_DEV_OUTBOX"]:
        abort(404)
    membership = authz.current_membership()
    managed_team = membership.tenant_id if membership is not None and authz.can(invitations.MANAGE.name) else None
    return render_template(
        "invite/dev_outbox.html",
        messages=mail.console_mail_for(current_user.email, managed_team),
        backend=config["MAIL_BACKEND"],
    )
