"""What every template may ask: the active membership, the user's teams, `can("operation")`, the top bar."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask

from nyxcore import authz, navigation


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def init_app(app: Flask) -> None:
    @app.context_processor
    def inject() -> dict[str, Any]:
        return {
            "membership": authz.current_membership(),
            "can": authz.can,
            "needs_verification": authz.needs_verification,
            "my_teams": authz.my_teams,
            "nav_entries": navigation.visible_entries,
        }

    app.jinja_env.filters["time"] = format_time
