"""Who may do what: the active membership of a request and the `role_required` decorator.

Every authorization decision of a view goes through `role_required`; templates ask `can(...)`,
which uses the same rule, before showing a control.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, flash, g, redirect, session, url_for
from flask_login import current_user
from werkzeug.wrappers.response import Response

from nyxcore import tenancy
from nyxcore.errors import PermissionDenied
from nyxcore.extensions import login_manager
from nyxcore.models import TenantMember, User
from nyxcore.roles import TenantRole, has_min_role
from nyxcore.services import sessions, teams

P = ParamSpec("P")
R = TypeVar("R")
ACTIVE_TENANT_KEY = "tenant_id"
SESSION_TOKEN_KEY = "sid"  # noqa: S105 (a key name; names the server-side session, services/sessions.py)


def current_membership() -> TenantMember | None:
    """The signed-in user's membership in the active team, loaded once per request."""
    membership: TenantMember | None = g.get("membership")
    return membership


def acting_member() -> TenantMember:
    """The active membership inside a view guarded by `role_required`, which guarantees one."""
    membership = current_membership()
    if membership is None:
        raise RuntimeError("acting_member() is for views under @role_required")
    return membership


def current_role() -> TenantRole | None:
    membership = current_membership()
    return membership.role if membership else None


def my_teams() -> list[TenantMember]:
    """All of the signed-in user's memberships (for the team switcher), read once per request."""
    memberships: list[TenantMember] = g.get("my_teams", [])
    return memberships


def can(minimum: TenantRole | str) -> bool:
    """For templates: does the current user hold at least `minimum` in the active team?"""
    return has_min_role(current_role(), TenantRole(minimum))


def load_active_membership() -> None:
    """Bind the request's tenant context: the user, and the active team if they still belong to it.

    A removed member loses the team on their next request and falls back to another team of theirs.
    """
    g.membership = None
    g.my_teams = []
    if not current_user.is_authenticated:
        return
    user_id: uuid.UUID = current_user.id
    tenancy.update_context(user_id=user_id)
    wanted = _session_tenant_id()
    g.my_teams = teams.memberships_of(user_id)
    membership = teams.choose_active(g.my_teams, wanted)
    if membership is None:
        session.pop(ACTIVE_TENANT_KEY, None)
        return
    if membership.tenant_id != wanted:
        session[ACTIVE_TENANT_KEY] = str(membership.tenant_id)
    tenancy.update_context(tenant_id=membership.tenant_id)
    g.membership = membership


def activate_team(membership: TenantMember) -> None:
    """Make `membership`'s team the active one for this request and the session."""
    session[ACTIVE_TENANT_KEY] = str(membership.tenant_id)
    tenancy.update_context(tenant_id=membership.tenant_id)
    g.membership = membership


def _session_tenant_id() -> uuid.UUID | None:
    try:
        return uuid.UUID(session.get(ACTIVE_TENANT_KEY, ""))
    except (TypeError, ValueError):
        return None


def role_required(minimum: TenantRole) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """Guard a view: anonymous users log in first, users without a team create one, lower roles get 403."""

    def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            if not current_user.is_authenticated:
                response: Response = login_manager.unauthorized()
                return response
            if current_membership() is None:
                flash("You are not in a team yet. Create one to continue.", "info")  # nothing to commit
                return redirect(url_for("teams.new"))
            if not has_min_role(current_role(), minimum):
                raise PermissionDenied(f"This needs the {minimum.label} role or higher in this team.")
            return view(*args, **kwargs)

        guarded.required_role = minimum  # type: ignore[attr-defined]
        return guarded

    return decorator


@login_manager.user_loader  # type: ignore[untyped-decorator]
def load_user(user_id: str) -> User | None:
    """The user of a live server-side session; a cookie alone (after log out, say) signs in no one."""
    token = session.get(SESSION_TOKEN_KEY)
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return None
    if not isinstance(token, str):
        return None
    tenancy.update_context(user_id=uid)  # row-level security shows a user their own sessions
    user = sessions.load(uid, token, idle=current_app.config["SESSION_IDLE_TIMEOUT"])
    if user is None:
        tenancy.update_context(user_id=None)
        session.clear()  # the session ended: drop what the cookie still carries
    return user
