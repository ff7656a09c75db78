"""The layers of docs/architecture.md hold: `lint-imports` passes on the tree, and an
import against a contract makes it fail with the offending line named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(lint), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages' sources and pyproject.toml, to break on purpose."""
    copy = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", copy)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


def test_the_tree_keeps_every_layer_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(("module", "wrong_import", "message"), [
    ("processors/rules_alarm.py", "import storage", "processors is not allowed to import storage"),
    ("processors/rules_alarm.py", "import alerts", "processors is not allowed to import alerts"),
    ("trygg/contract.py", "import gateway", "trygg is not allowed to import gateway"),
    ("storage/events.py", "import gateway", "storage is not allowed to import gateway"),
    ("alerts/service.py", "import dashboard", "alerts is not allowed to import dashboard"),
    ("gateway/validate.py", "import processors", "gateway is not allowed to import processors"),
    ("mqtt/wire.py", "import storage", "mqtt is not allowed to import storage"),
])
def test_an_import_against_the_layers_fails_and_is_named(tree: Path, module: str, wrong_import: str,
                                                         message: str) -> None:
    path = tree / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{wrong_import}  # noqa: E402\n")
        result = lint_imports(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
