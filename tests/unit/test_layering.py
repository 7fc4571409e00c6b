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


def context_changes(path: Path) -> set[str]:
    """Where `path` enters or changes the tenant context: `tenancy.tenant_context` or its import."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "tenant_context":
            found.add(f"line {node.lineno}: tenancy.tenant_context")
        elif isinstance(node, ast.ImportFrom) and node.module == "nyxcore.tenancy":
            found |= {f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "tenant_context"}
    return found


@pytest.mark.parametrize(
    "path", sorted(SERVICES.rglob("*.py")), ids=lambda p: str(p.relative_to(SERVICES))
)
def test_services_never_change_the_tenant_context(path):
    # The entry points set it (request hook, views via authz.acting_as, Celery task base, CLI).
    assert context_changes(path) == set()


def test_the_context_check_finds_a_context_change(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from nyxcore import tenancy\nwith tenancy.tenant_context(tenant_id=None):\n    pass\n")
    assert context_changes(offender) == {"line 2: tenancy.tenant_context"}
