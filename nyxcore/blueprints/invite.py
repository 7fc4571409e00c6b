"""Invitations: the admin side under /team/invitations and the magic link at /invite/<token>."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("invite", __name__)
