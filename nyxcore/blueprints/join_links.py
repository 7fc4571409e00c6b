"""Join links: the admin's side under /team/join-links, and the link itself at /join/<token>.

`GET /join/<token>` only shows the team and the role (link previews and mail scanners fetch links);
joining is the `POST`, with CSRF, by a signed-in account with a verified address. Both are rate
limited with the magic links (one budget per client address). The raw token is shown once, in
the page that answers the POST creating the link, and never stored (web.py sends
`Referrer-Policy: strict-origin` for every route with a `..._token` in its path).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Blueprint, abort, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, Length

from nyxcore import authz
from nyxcore.authz import acting, role_required
from nyxcore.confirmation import Confirmation, back_on_failure, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.extensions import configured_limit, limiter, login_manager
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.models import JoinLink
from nyxcore.roles import TenantRole
from nyxcore.services import account_mail, invitations, join_links
from nyxcore.services.join_links import Standing
from nyxcore.web import form_status, notify

bp = Blueprint("join_links", __name__)


class JoinLinkForm(FlaskForm):  # type: ignore[misc]
    # Any role passes here; the service refuses admin and owner with a message on this field.
    role = SelectField(
        "Role",
        choices=[SelectChoice(role.value, role.label) for role in join_links.ROLES],
        default=TenantRole.MEMBER.value,
        validate_choice=False,
    )
    days = IntegerField("Works for (days)", default=7, validators=[InputRequired(message="Enter a number of days.")])
    max_uses = IntegerField(
        "Number of uses", default=10, validators=[InputRequired(message="Enter how many people may use it.")]
    )
    domains = StringField("Only for these e-mail domains (optional)", validators=[Length(max=1000)])


def _role(value: str | None) -> TenantRole:
    try:
        return TenantRole(value or "")
    except ValueError:
        return TenantRole.OWNER  # an unknown role is refused like the ones a link may not give


def _page(form: JoinLinkForm, created: join_links.CreatedLink | None = None) -> Response:
    status = form_status(form)
    page = render_template(
        "join_links/manage.html",
        form=form,
        links=join_links.list_links(acting()),
        created=created,
        created_url=account_mail.link(url_for("join_links.show", join_token=created.token)) if created else None,
        max_days=join_links.LINK_MAX_DAYS,
    )
    response = make_response(page, status)
    if created is not None:  # the raw link is in this page alone: no copy in any cache
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/team/join-links", methods=["GET", "POST"], endpoint="manage")
@role_required(join_links.MANAGE)
def manage() -> Response:
    """Make a join link (its address is shown once, here) and list the team's links."""
    form = JoinLinkForm()
    created = None
    if form.validate_on_submit():
        try:
            created = join_links.create(
                acting(),
                role=_role(form.role.data),
                days=form.days.data,
                max_uses=form.max_uses.data,
                domains=form.domains.data or "",
            )
        except DomainError as exc:
            add_domain_error(form, exc, "role")
    return _page(form, created)


@bp.route("/team/join-links/<uuid:link_id>/revoke", methods=["GET", "POST"])
@role_required(join_links.MANAGE)
@back_on_failure("join_links.manage")
def revoke(link_id: uuid.UUID) -> ResponseReturnValue:
    actor = acting()
    if not is_confirmed():  # the confirmed POST's service call looks the link up (and locks it) itself
        link = join_links.revocable(actor, link_id)
        role, left = link.role.label.lower(), link.max_uses - link.uses
        return confirm_page(
            Confirmation(
                title=f"Revoke this {role} join link?",
                consequences=(
                    f"The link stops working at once: nobody else joins {actor.tenant.name} through it"
                    f" ({left} of {link.max_uses} uses were left). People who joined with it stay.",
                ),
                button="Revoke the link",
                back=url_for("join_links.manage"),
            )
        )
    join_links.revoke(actor, link_id)
    notify("The join link was revoked; it lets nobody else in.", "success")
    return redirect(url_for("join_links.manage"))


@contextmanager
def _presenting(token: str) -> Iterator[JoinLink]:
    """Act as the holder of a join link: with its hash, then in its team (as authz.presenting_invitation).

    The hash alone lets row-level security show the link (migration 0013, `join_link_by_token`);
    the team's context then lets the join read the team and write the new member's row. Yields the
    link, found once per request. Raises NotFound.
    """
    user_id = current_user.id if current_user.is_authenticated else None
    token_hash = invitations.hash_token(token)  # the same SHA-256 as a magic link's
    with authz.acting_as(user_id, invite_token_hash=token_hash):
        link = join_links.find_by_token(token)
    with authz.acting_as(user_id, tenant_id=link.tenant_id, invite_token_hash=token_hash):
        yield join_links.with_team(link)


@bp.get("/join/<join_token>")
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="magic-link")
def show(join_token: str) -> tuple[str, int]:
    """The team and role a join link gives, and what the visitor can do. Never uses it."""
    user = current_user._get_current_object() if current_user.is_authenticated else None
    with _presenting(join_token) as link:
        visit = join_links.visit(link, user)
    here = url_for("join_links.show", join_token=join_token)
    page = render_template(
        "join_links/join.html",
        link=visit.link,
        standing=visit.standing.value,
        join_url=here,
        login_url=url_for("auth.login", next=here),
        form=ConfirmForm(),
    )
    return page, 403 if visit.standing is Standing.UNVERIFIED else 200


@bp.post("/join/<join_token>")
@limiter.shared_limit(configured_limit("RATELIMIT_MAGIC_LINK"), scope="magic-link")
def join(join_token: str) -> Response:
    """Join the link's team as the signed-in user, then make it the active team."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    with _presenting(join_token) as link:
        if not current_user.is_authenticated:
            join_links.visit(link, None)  # unknown or dead links answer 404/410 before any log in
            response: Response = login_manager.unauthorized()
            return response
        joined = join_links.join(link, current_user._get_current_object())
    authz.activate_team(joined.membership)
    team = joined.membership.tenant.name
    if joined.joined:
        notify(f"Welcome to {team}. You joined as {joined.membership.role.label.lower()}.", "success")
    else:
        notify(f"You are already a member of {team}.", "info")
    return redirect(url_for("team.overview"), 303)
