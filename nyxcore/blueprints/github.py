"""The team's GitHub connection (`/github/...`): members look, owners connect and disconnect."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from nyxcore.authz import acting, role_required
from nyxcore.errors import DomainError
from nyxcore.forms import ConfirmForm, add_domain_error
from nyxcore.navigation import NavEntry
from nyxcore.services import github_tokens
from nyxcore.web import abandon_changes, form_page, notify

bp = Blueprint("github", __name__, url_prefix="/github")
NAV = (NavEntry("GitHub", "github.status", 40),)


class ConnectForm(FlaskForm):  # type: ignore[misc]
    # A PasswordField never renders its value back, so a re-shown form cannot echo the token.
    token = PasswordField(
        "Personal access token",
        validators=[DataRequired(message="Paste the token."), Length(max=255)],
        render_kw={"spellcheck": "false", "autocapitalize": "off"},
    )


def _status_page(form: ConnectForm) -> tuple[str, int]:
    connection = github_tokens.status(acting())
    return form_page("github/status.html", form, connection=connection)


@bp.get("/")
@role_required(github_tokens.VIEW)
def status() -> tuple[str, int]:
    return _status_page(ConnectForm())


@bp.post("/connect")
@role_required(github_tokens.MANAGE)
def connect() -> Response | tuple[str, int]:
    form = ConnectForm()
    if not form.validate_on_submit():
        return _status_page(form)
    try:
        login = github_tokens.connect(acting(), form.token.data)
    except DomainError as exc:
        add_domain_error(form, exc, "token")  # its status: 400 rejected, 502 GitHub unavailable
        return _status_page(form)
    notify(f"GitHub is connected as @{login}.", "success")
    return redirect(url_for("github.status"))


@bp.get("/repos")
@role_required(github_tokens.VIEW)
def repos() -> tuple[str, int]:
    page = request.args.get("page", default=1, type=int)
    try:
        listing = github_tokens.repositories(acting(), page=page)
    except DomainError as exc:
        abandon_changes()
        return render_template("github/repos.html", listing=None, error=exc.message), exc.status_code
    return render_template("github/repos.html", listing=listing, error=None), 200


@bp.post("/disconnect")
@role_required(github_tokens.MANAGE)
def disconnect() -> Response:
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if github_tokens.disconnect(acting()):
        notify("GitHub is disconnected and the stored token deleted.", "success")
    else:
        notify("GitHub was not connected.", "info")
    return redirect(url_for("github.status"))
