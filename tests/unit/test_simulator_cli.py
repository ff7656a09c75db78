"""`trygg simulate` registers on a Typer app and works without a broker in dry-run mode."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from typer.testing import CliRunner

from simulators import register
from trygg.contract import parse_event, parse_topic
from trygg.registry import parse_registry


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _main() -> None:
        """trygg"""

    register(root)
    return root


def test_register_adds_the_simulate_command() -> None:
    result = CliRunner().invoke(app(), ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--residents", "--speed", "--seed", "--duration", "--registry-out", "--rate",
                   "--count", "--scenario", "--mqtt-url", "--prefix"):
        assert option in result.output


def test_a_dry_run_prints_valid_messages_and_writes_the_registry(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    result = CliRunner().invoke(app(), [
        "simulate", "--residents", "3", "--speed", "600", "--duration", "3", "--seed", "4",
        "--registry-out", str(out), "--dry-run", "--prefix", "x/v1",
    ])
    assert result.exit_code == 0, result.output
    registry = parse_registry(out.read_text())
    devices = registry.device_index()
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines
    for line in lines:
        topic = parse_topic(line["topic"], "x/v1")
        assert topic.device_id in devices
        if topic.channel == "events":
            parse_event(topic.device_id, line["payload"].encode(),
                        datetime.fromisoformat(line["at"]))


def test_a_scenario_dry_run_prints_its_messages() -> None:
    result = CliRunner().invoke(app(), ["simulate", "--scenario", "button_repeated", "--dry-run"])
    assert result.exit_code == 0, result.output
    types = [json.loads(json.loads(line)["payload"])["type"] for line in result.stdout.splitlines()
             if line.startswith("{")]
    assert types.count("alarm.button") == 4  # three presses, one of them re-sent


def test_an_unknown_scenario_is_an_error_not_a_traceback() -> None:
    result = CliRunner().invoke(app(), ["simulate", "--scenario", "nope", "--dry-run"])
    assert result.exit_code == 1
    assert "no scenario" in result.output
