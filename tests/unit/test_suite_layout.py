"""The test suite's own layout: shared helpers and fixtures live in fixture modules
(tests/fix_*.py, tests/helpers.py, ...), registered in tests/conftest.py; a test module
never imports another test module, so that each can be read, run and changed alone."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an `import` or `from ... import` names,
    including `from tests import test_x` (which imports the module tests.test_x)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if not is_test_module(node.module):
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def is_test_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def test_no_test_module_imports_another_test_module() -> None:
    offences = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offences += [f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
                     for line, name in imported_modules(tree) if is_test_module(name)]
    assert not offences, "move what they share into a fixture module (tests/fix_*.py):\n" + "\n".join(offences)
