"""Each scripted scenario produces exactly its expected alerts: through the real rules
and alert life cycle on the scenario's own clock, and, for the scenarios that need no
timers, through the whole running system over MQTT."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts import AlertService
from alerts.escalation import Timeouts
from processors import Processor
from simulators import Scenario, list_scenarios, load_scenario
from storage import save_registry
from tests.fix_alerts import Handheld
from tests.fix_mqtt import MosquittoInstance
from tests.fix_up import TryggProcess
from tests.helpers import wait_for

Outcome = tuple[str, str, int | None]


def expected(scenario: Scenario) -> Counter[Outcome]:
    return Counter((e.kind.value, e.state.value, e.event_count) for e in scenario.expect)


def outcomes(scenario: Scenario, alerts: list[dict[str, Any]]) -> Counter[Outcome]:
    """Kind, final state, and the event count where the scenario names one."""
    counted = {e.kind.value for e in scenario.expect if e.event_count is not None}
    return Counter((a["kind"], a["state"], a["event_count"] if a["kind"] in counted else None) for a in alerts)


def play_on_its_clock(scenario: Scenario, t0: datetime) -> list[dict[str, Any]]:
    """Feed the scenario's events to the real rules and alert service, firing every
    timer at its instant; returns each alert's last state, as staff would see it."""
    processor = Processor(scenario.registry)
    service = AlertService(scenario.registry, Timeouts(30, 60, 300, None))
    processor.start_supervision(t0, {})
    last: dict[str, dict[str, Any]] = {}

    def apply(intents: list[Any]) -> None:
        for change in service.apply(intents):
            last[change.wire["alert_id"]] = change.wire

    def run_timers(until: datetime) -> None:
        while (deadline := processor.next_deadline()) is not None and deadline <= until:
            apply(processor.due(deadline))

    events = scenario.events(t0)
    for event in events:
        run_timers(event.received_at)
        apply(processor.handle(event, event.received_at))
    run_timers(max([t0 + timedelta(seconds=scenario.duration_s)] + [e.received_at for e in events]))
    return list(last.values())


@pytest.mark.parametrize("name", list_scenarios())
def test_scenario_gives_exactly_its_expected_alerts_on_its_own_clock(name: str) -> None:
    scenario = load_scenario(name)
    alerts = play_on_its_clock(scenario, scenario.start_on(date(2026, 11, 20)))
    assert outcomes(scenario, alerts) == expected(scenario), alerts


# --- through the running system --------------------------------------------------

EVENT_DRIVEN = ["button_repeated", "fall_then_cancel", "smoke_at_night"]


@pytest.fixture
def system(mosquitto: MosquittoInstance, database: str, prefix: str,
           tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": database, "TRYGG_MQTT_PREFIX": prefix,
                "TRYGG_MQTT_CLIENT_ID": f"sc{prefix.split('/')[0]}", "TRYGG_DATA_DIR": str(tmp_path / "data"),
                "TRYGG_HTTP_PORT": "0", "TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32})
    yield env


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", EVENT_DRIVEN)
def test_scenario_played_over_mqtt_gives_exactly_its_expected_alerts(
    name: str, system: dict[str, str], mosquitto: MosquittoInstance, database: str, prefix: str, tmp_path: Path
) -> None:
    scenario = load_scenario(name)
    with psycopg.connect(database) as conn:
        save_registry(conn, scenario.registry, actor="test")
    trygg = TryggProcess(system, tmp_path / "trygg.log")
    staff = Handheld(mosquitto, f"{prefix}/teams/+/alerts/+")
    try:
        played = subprocess.run(
            [sys.executable, "-m", "trygg", "simulate", "--scenario", name, "--speed", "200",
             "--mqtt-url", mosquitto.url, "--prefix", prefix],
            env=system, capture_output=True, text=True, timeout=120)
        assert played.returncode == 0, played.stdout + played.stderr
        want = expected(scenario)

        def final_states() -> Counter[Outcome]:
            last: dict[str, dict[str, Any]] = {}
            for alert in staff.alerts():
                last[alert["alert_id"]] = alert
            return outcomes(scenario, list(last.values()))

        got = wait_for(final_states, lambda c: c == want, timeout=20)
        assert got == want
    finally:
        staff.close()
        trygg.stop()
