"""The top bar: each blueprint module declares its own entries (`NAV = (NavEntry(...),)`).

An entry is shown exactly when its endpoint's view would let the current user in: the view's
`role_required` operation decides, so the bar never offers a page that answers 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import Flask, current_app

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
    """The entries the current user may open in the active team."""
    app = current_app
    entries: list[NavEntry] = app.extensions.get(_EXTENSION, [])
    return [
        entry
        for entry in entries
        if (needed := required_operation(app, entry.endpoint)) is None or authz.permits(needed)
    ]
