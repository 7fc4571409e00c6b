"""The layering the architecture promises that import-linter cannot check.

The module-level rules (blueprints -> services -> models; pure modules import no Flask; services
import neither blueprints nor the request boundary; no import cycles) are import-linter contracts
in pyproject.toml, run by `make lint`. import-linter sees modules, not names, so that services
never reach for the request's own objects is checked here on the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "nyxcore" / "services"
REQUEST_OBJECTS = {"request", "session", "g", "redirect", "abort"}


def names_imported_from_flask(path: Path) -> set[str]:
    """The names `path` imports with `from flask import ...`."""
    tree = ast.parse(path.read_text())
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "flask"
        for alias in node.names
    }


@pytest.mark.parametrize(
    "path", sorted(SERVICES.rglob("*.py")), ids=lambda p: str(p.relative_to(SERVICES))
)
def test_services_never_touch_the_request(path):
    assert not names_imported_from_flask(path) & REQUEST_OBJECTS
