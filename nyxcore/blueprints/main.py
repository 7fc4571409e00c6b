"""The front door, and the icon browsers ask for at /favicon.ico."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask_login import current_user
from werkzeug.wrappers.response import Response

bp = Blueprint("main", __name__)


@bp.get("/")
def index() -> Response:
    if current_user.is_authenticated:
        return redirect(url_for("team.overview"))
    return redirect(url_for("auth.login"))


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page links: send them to the SVG icon (no 404 per page)."""
    return redirect(url_for("static", filename="favicon.svg"), 301)
