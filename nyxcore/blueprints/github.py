"""The team's GitHub connection (`/github/...`): members look, owners connect and disconnect."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from werkzeug.wrappers.response import Response
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from nyxcore.authz import acting, role_required
from nyxcore.confirmation import Confirmation, back_on_failure, confirm_page, is_confirmed
from nyxcore.errors import DomainError
from nyxcore.navigation import NavEntry
from nyxcore.services import github_tokens
from nyxcore.web import abandon_changes, carried_errors, form_page, notify, redirect_after_failure

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
    return _status_page(carried_errors(ConnectForm()))


@bp.post("/connect")
@role_required(github_tokens.MANAGE)
@back_on_failure("github.status", field="token")
def connect() -> Response:
    """Check and store a token; a refusal (bad token, GitHub unavailable) is said on the status page (303)."""
    form = ConnectForm()
    if not form.validate_on_submit():
        # The token is never carried back: the message says what to do, the field starts empty.
        problems = [error for errors in form.errors.values() for error in errors]
        return redirect_after_failure(" ".join(problems), url_for("github.status"), field="token")
    login = github_tokens.connect(acting(), form.token.data)
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


@bp.route("/disconnect", methods=["GET", "POST"])
@role_required(github_tokens.MANAGE)
def disconnect() -> ResponseReturnValue:
    actor = acting()
    if not is_confirmed():
        connection = github_tokens.status(actor)
        login = f" (@{connection.login})" if connection else ""
        return confirm_page(
            Confirmation(
                title=f"Disconnect GitHub from {actor.tenant.name}?",
                consequences=(
                    f"The stored token{login} is deleted: nobody in {actor.tenant.name} can browse"
                    " its repositories until an owner connects GitHub again.",
                    "Revoke the token on GitHub as well if nothing else uses it.",
                ),
                button="Disconnect GitHub",
                back=url_for("github.status"),
            )
        )
    if github_tokens.disconnect(actor):
        notify("GitHub is disconnected and the stored token deleted.", "success")
    else:
        notify("GitHub was not connected.", "info")
    return redirect(url_for("github.status"))
