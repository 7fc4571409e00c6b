"""What every template may ask: the active membership, the user's teams, and `can(role)`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask, g
from flask_login import current_user

from nyxcore import authz
from nyxcore.models import TenantMember
from nyxcore.roles import TenantRole
from nyxcore.services import teams


def my_teams() -> list[TenantMember]:
    """The signed-in user's memberships for the switcher, fetched at most once per request."""
    if not current_user.is_authenticated:
        return []
    if "my_teams" not in g:
        g.my_teams = teams.memberships_of(current_user.id)
    result: list[TenantMember] = g.my_teams
    return result


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def init_app(app: Flask) -> None:
    @app.context_processor
    def inject() -> dict[str, Any]:
        return {
            "membership": authz.current_membership(),
            "can": authz.can,
            "my_teams": my_teams,
            "TenantRole": TenantRole,
            "nav_endpoints": app.view_functions.keys,
        }

    app.jinja_env.filters["time"] = format_time
