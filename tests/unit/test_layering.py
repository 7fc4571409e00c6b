"""The layering the architecture promises, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nyxcore"
FLASK_FREE = ["roles.py", "crypto.py", "models.py", "passwords.py"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def imported_names(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


@pytest.mark.parametrize("name", FLASK_FREE)
def test_pure_modules_import_no_flask(name):
    modules = imported_modules(PACKAGE / name)
    assert not {m for m in modules if m.split(".")[0] in {"flask", "flask_login", "flask_wtf", "werkzeug"}}


@pytest.mark.parametrize("path", sorted((PACKAGE / "services").glob("*.py")), ids=lambda p: p.name)
def test_services_never_touch_the_request(path):
    assert not imported_names(path, "flask") & {"request", "session", "g", "redirect", "abort"}
    assert not any(module.startswith("nyxcore.blueprints") for module in imported_modules(path))
