"""The team's domains (`/team/domains`): the domain policy, verified domains, and join requests.

Owners set the allowlist of e-mail domains and claim domains, each proved by a DNS TXT record
("Check now", rate limited per domain); admins approve or decline requests to join
(`/team/join-requests`).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, abort, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from nyxcore.authz import acting, permits, role_required
from nyxcore.confirmation import Confirmation, back_on_failure, confirm_page, is_confirmed
from nyxcore.errors import Conflict, DomainError, RateLimited
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.roles import TenantRole
from nyxcore.services import domain_joining, domain_policy, team_domains
from nyxcore.services.team_domains import OUTCOME_MESSAGES, CheckOutcome, JoinMode
from nyxcore.web import form_status, notify

bp = Blueprint("domains", __name__, url_prefix="/team")
NAV = (NavEntry("Domains", "domains.index", 80), NavEntry("Join requests", "domains.requests", 35))
MODE_CHOICES = [
    SelectChoice(JoinMode.REQUEST.value, "Ask to join; an admin approves"),
    SelectChoice(JoinMode.DIRECT.value, "Join at once"),
]
ROLE_CHOICES = [SelectChoice(role.value, role.label) for role in team_domains.JOIN_ROLES]


class AllowlistForm(FlaskForm):  # type: ignore[misc]
    allowed_domains = TextAreaField(
        "Allowed e-mail domains",
        validators=[Length(max=5000)],
        render_kw={"spellcheck": "false", "autocapitalize": "off", "rows": 3},
    )


class JoinSettingsForm(FlaskForm):  # type: ignore[misc]
    join_mode = SelectField("How people join", choices=MODE_CHOICES, default=JoinMode.REQUEST.value)
    join_role = SelectField("Their role", choices=ROLE_CHOICES, default=TenantRole.MEMBER.value)


class AddDomainForm(JoinSettingsForm):
    domain = StringField(
        "Domain",
        validators=[DataRequired(message="Enter a domain."), Length(max=253)],
        render_kw={"spellcheck": "false", "autocapitalize": "off", "placeholder": "example.com"},
    )


def _page(allowlist: AllowlistForm | None = None, add: AddDomainForm | None = None) -> tuple[str, int]:
    """The domains page, with the forms given (shown again with their errors) or fresh ones."""
    actor = acting()
    allowlist = allowlist or AllowlistForm(
        formdata=None, data={"allowed_domains": "\n".join(domain_policy.allowed_domains(actor.tenant))}
    )
    add = add or AddDomainForm(formdata=None)
    context: dict[str, Any] = {"claims": [], "records": {}}
    if permits(team_domains.MANAGE):
        claims = team_domains.list_domains(actor)
        context = {"claims": claims, "records": {c.id: team_domains.verification_record(c) for c in claims}}
    status = form_status(allowlist, add)
    page = render_template(
        "domains/index.html",
        allowlist_form=allowlist,
        add_form=add,
        confirm_form=ConfirmForm(),
        mode_choices=MODE_CHOICES,
        role_choices=ROLE_CHOICES,
        **context,
    )
    return page, status


@bp.get("/domains")
@role_required(domain_policy.MANAGE)
def index() -> tuple[str, int]:
    return _page()


@bp.post("/domains/allowlist")
@role_required(domain_policy.MANAGE)
def allowlist() -> Response | tuple[str, int]:
    form = AllowlistForm()
    if form.validate_on_submit():
        try:
            domains = domain_policy.set_allowed_domains(acting(), form.allowed_domains.data or "")
        except DomainError as exc:
            add_domain_error(form, exc, "allowed_domains")
        else:
            notify(
                f"Only addresses at {', '.join(domains)} may join now."
                if domains
                else "Anyone may be invited or join now.",
                "success",
            )
            return redirect(url_for("domains.index"))
    return _page(allowlist=form)


@bp.post("/domains")
@role_required(team_domains.MANAGE)
def add() -> Response | tuple[str, int]:
    form = AddDomainForm()
    if form.validate_on_submit():
        try:
            claim = team_domains.add_domain(
                acting(), form.domain.data, form.join_mode.data, form.join_role.data
            )
        except DomainError as exc:
            add_domain_error(form, exc, "domain")
        else:
            notify(f"{claim.domain} added. Publish the TXT record shown, then press Check now.", "success")
            return redirect(url_for("domains.index"))
    return _page(add=form)


def _confirmed() -> None:
    if not ConfirmForm().validate_on_submit():
        abort(400)


@bp.post("/domains/<uuid:domain_id>/check")
@role_required(team_domains.MANAGE)
def check(domain_id: uuid.UUID) -> Response:
    """Look the domain's TXT record up now (rate limited per domain)."""
    _confirmed()
    try:
        claim, outcome = team_domains.check(acting(), domain_id)
    except (RateLimited, Conflict) as exc:
        notify(exc.message, "error")  # too soon, or taken: said on the page; the lookup still counts
    else:
        category = "success" if outcome is CheckOutcome.VERIFIED else "error"
        notify(OUTCOME_MESSAGES[outcome].format(domain=claim.domain), category)
    return redirect(url_for("domains.index"))


@bp.post("/domains/<uuid:domain_id>/join")
@role_required(team_domains.MANAGE)
@back_on_failure("domains.index")
def join_settings(domain_id: uuid.UUID) -> Response:
    form = JoinSettingsForm()
    if not form.validate_on_submit():
        abort(400)
    claim = team_domains.change_join(acting(), domain_id, form.join_mode.data, form.join_role.data)
    notify(f"Saved how people at {claim.domain} join.", "success")
    return redirect(url_for("domains.index"))


@bp.route("/domains/<uuid:domain_id>/remove", methods=["GET", "POST"])
@role_required(team_domains.MANAGE)
def remove(domain_id: uuid.UUID) -> ResponseReturnValue:
    actor = acting()
    claim = team_domains.get_claim(actor, domain_id)
    if not is_confirmed():
        team = actor.tenant.name
        consequences = [f"People at {claim.domain} no longer see {team} under “Teams you can join”."]
        if claim.verified_at is not None:
            consequences.append(
                f"{claim.domain} stops being verified for {team}: to claim it again you publish a new TXT record."
            )
        return confirm_page(
            Confirmation(
                title=f"Remove {claim.domain}?",
                consequences=consequences,
                button=f"Remove {claim.domain}",
                back=url_for("domains.index"),
            )
        )
    claim = team_domains.remove(actor, domain_id)
    notify(f"{claim.domain} removed. People at it no longer see this team.", "success")
    return redirect(url_for("domains.index"))


@bp.get("/join-requests")
@role_required(domain_joining.DECIDE)
def requests() -> str:
    return render_template(
        "domains/requests.html",
        join_requests=domain_joining.open_requests(acting()),
        confirm_form=ConfirmForm(),
    )


@bp.post("/join-requests/<uuid:request_id>/approve")
@role_required(domain_joining.DECIDE)
@back_on_failure("domains.requests")
def approve(request_id: uuid.UUID) -> Response:
    _confirmed()
    decided = domain_joining.decide(acting(), request_id, approve=True)
    notify(
        f"{decided.name} ({decided.email}) joined as {decided.role.label.lower()}; they were told by mail.",
        "success",
    )
    return redirect(url_for("domains.requests"))


@bp.post("/join-requests/<uuid:request_id>/decline")
@role_required(domain_joining.DECIDE)
@back_on_failure("domains.requests")
def decline(request_id: uuid.UUID) -> Response:
    _confirmed()
    decided = domain_joining.decide(acting(), request_id, approve=False)
    notify(f"The request from {decided.email} was declined; they were told by mail.", "success")
    return redirect(url_for("domains.requests"))
