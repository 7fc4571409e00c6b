"""The team's GitHub connection (`/github/...`)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("github", __name__, url_prefix="/github")
