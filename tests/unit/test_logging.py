"""Log lines (trygg/logging.py): each names its logger, and every event name in the source
is a snake_case constant with the values in key=value pairs."""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from trygg.logging import configure_logging, get_logger

ROOT = Path(__file__).resolve().parents[2]
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"}
RECEIVERS = {"log", "logger", "_log", "_logger"}
PACKAGES = ["trygg", "mqtt", "storage", "gateway", "processors", "alerts", "dashboard", "simulators", "composition",
            "bench"]


@pytest.fixture
def unconfigured_after() -> Iterator[None]:
    """configure_logging for one test: structlog and the root logger as they were after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("unconfigured_after")
def test_a_json_line_names_its_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")  # on the stderr capsys holds
    get_logger("gateway.ingress").warning("broker_connection_lost", attempt=3)
    get_logger("dashboard.audit").debug("below_the_level")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    assert lines[0]["logger"] == "gateway.ingress"
    assert lines[0]["event"] == "broker_connection_lost"
    assert lines[0]["attempt"] == 3
    assert lines[0]["level"] == "warning"


@pytest.mark.usefixtures("unconfigured_after")
def test_console_output_shows_the_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    get_logger("alerts.stage").info("alert_opened", kind="fall")
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err)
    assert "alert_opened" in text
    assert "[alerts.stage]" in text


def python_files(package: str) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if path.suffix == ".py":
            yield path
        elif not path.suffix and path.read_bytes()[:100].startswith(b"#!") and b"python" in path.read_bytes()[:100]:
            yield path  # bench/ scripts


def out_of_style(path: Path) -> Iterator[str]:
    """Log calls whose event is not a snake_case string literal, and loggers not named
    by `__name__` (a script run as __main__ may name its own)."""
    module = path.suffix == ".py" and path.name != "__main__.py"
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        func = node.func
        if isinstance(func, ast.Name) and func.id == "get_logger" and module:
            if not (node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__"):
                yield f"{where}: get_logger({ast.unparse(node.args[0]) if node.args else ''})"
            continue
        if not isinstance(func, ast.Attribute) or func.attr not in LEVELS:
            continue
        receiver = func.value
        name = receiver.id if isinstance(receiver, ast.Name) else (
            receiver.attr if isinstance(receiver, ast.Attribute) else "")
        if name not in RECEIVERS:
            continue
        event = node.args[0] if node.args else None
        if not (isinstance(event, ast.Constant) and isinstance(event.value, str) and SNAKE.match(event.value)):
            yield f"{where}: {ast.unparse(event) if event else '(no event)'}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_event_is_a_snake_case_constant_and_every_logger_its_module(package: str) -> None:
    found = [line for path in python_files(package) for line in out_of_style(path)]
    assert found == []
