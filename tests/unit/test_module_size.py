"""One job per module, small functions: no module under nyxcore/ over 350 lines, no function over 50."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nyxcore"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 50


def modules() -> list[Path]:
    """Every Python module of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(path: Path) -> list[str]:
    """`module:function (N lines)` for each function, method or nested function over the limit."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # From the `def` line (decorators not counted) to the last line, docstring included.
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({length} lines)")
    return found


def test_no_module_is_over_350_lines():
    too_long = [
        f"{path.relative_to(PACKAGE.parent)} ({length} lines)"
        for path in modules()
        if (length := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {', '.join(too_long)}"


def test_no_function_is_over_50_lines():
    too_long = [entry for path in modules() for entry in long_functions(path)]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(too_long)}"
