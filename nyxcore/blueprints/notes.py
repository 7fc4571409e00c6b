"""NyxBook: team notes (`/notes/...`). Viewers read; members and up write."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("notes", __name__, url_prefix="/notes")
