"""The top bar: each blueprint module declares its own entries (`NAV = (NavEntry(...),)`).

An entry is shown exactly when its endpoint's view would let the current user in: the view's
`role_required` operation decides, so the bar never offers a page that answers 403. The entries
also name the sections that switching team keeps you in (`page_after_switch`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import Flask, current_app
from werkzeug.exceptions import HTTPException

from nyxcore import authz
from nyxcore.permissions import Operation

_EXTENSION = "nyxcore_navigation"


@dataclass(frozen=True)
class NavEntry:
    """A link in the top bar: its label, the endpoint it opens, and where it goes (lower first)."""

    label: str
    endpoint: str
    order: int = 50


def register(app: Flask, entries: Iterable[NavEntry]) -> None:
    """Add a blueprint's entries to the app's top bar."""
    registered: list[NavEntry] = app.extensions.setdefault(_EXTENSION, [])
    registered.extend(entries)
    registered.sort(key=lambda entry: (entry.order, entry.label))


def required_operation(app: Flask, endpoint: str) -> Operation | None:
    """The operation guarding `endpoint`'s view (None: no team role needed)."""
    needed: Operation | None = getattr(app.view_functions[endpoint], "operation", None)
    return needed


def visible_entries() -> list[NavEntry]:
    """The entries the current user may open in the active team.

    The role and the address's verification are asked once for the bar (what `authz.permits` asks for
    each operation), not once per entry: every signed-in page draws the bar.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # once, not per entry
    entries: list[NavEntry] = app.extensions.get(_EXTENSION, [])
    role, verified = authz.current_role(), authz.email_verified()
    return [
        entry
        for entry in entries
        if (needed := required_operation(app, entry.endpoint)) is None or needed.permits(role, email_verified=verified)
    ]


def page_after_switch(path: str) -> str:
    """The endpoint to open after switching team from the page at `path`: that page when it names no
    object (the other team's NyxBook list for the NyxBook list), else the top-bar section whose
    address starts it (a note's page: NyxBook); the team page when the new role may see neither,
    or when `path` is outside the team's pages (the account, an unknown address)."""
    app = current_app
    same = _object_free_page(app, path)
    sections = sorted(
        (
            (rule.rule, entry.endpoint)
            for entry in app.extensions.get(_EXTENSION, [])
            for rule in app.url_map.iter_rules(entry.endpoint)
        ),
        key=lambda section: len(section[0]),
        reverse=True,
    )
    candidates = [same] if same else []
    candidates += [endpoint for prefix, endpoint in sections if path.startswith(prefix)]
    for endpoint in candidates:
        needed = required_operation(app, endpoint)
        if needed is not None and authz.permits(needed):
            return endpoint
    return "team.overview"


def _object_free_page(app: Flask, path: str) -> str | None:
    """The endpoint that shows `path` on a GET without naming an object (no URL arguments), or None."""
    try:
        endpoint, arguments = app.url_map.bind("").match(path, method="GET")
    except HTTPException:  # no such page, not a GET, or a redirect (a missing slash)
        return None
    return None if arguments else str(endpoint)
