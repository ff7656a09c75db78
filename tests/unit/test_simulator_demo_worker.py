"""The demo's simulated home-care worker (composition/demo.py) acts only on alerts the
demo's own script raised, and never on one a person has taken (issue 17: it took and
resolved every escalated alert, also ones a person published or had already taken)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest

from alerts import AlertHub, AlertNotFound, IllegalTransition, Subscription
from composition import demo
from composition.demo import STAFF, YOURS, Script, worker_resolves, worker_takes
from simulators import demo_registry
from tests.helpers import alert_doc
from trygg.alert import Alert
from trygg.contract import AlertState


def raised_by(event_id: str, alert_id: str = "a-1", kind: str = "alarm", state: str = "open") -> Alert:
    alert = alert_doc(alert_id, "r-0001", "east", kind=kind, state=state)
    return dataclasses.replace(alert, trigger={**alert.trigger, "event_id": event_id})


def test_the_worker_takes_only_open_visits_the_script_raised() -> None:
    script = Script()
    script.note("demo-1")
    assert worker_takes(raised_by("demo-1"), script)
    assert not worker_takes(raised_by("readme-1700000000"), script), "a person's own event"
    assert not worker_takes(raised_by("demo-1", state="acknowledged"), script), "taken by someone"
    assert not worker_takes(raised_by("demo-1", state="cancelled"), script)
    assert not worker_takes(raised_by("demo-1", kind="battery_low"), script), "a technician's job"


def test_the_worker_resolves_only_what_it_took_itself() -> None:
    mine = dataclasses.replace(raised_by("demo-1", state="acknowledged"), acknowledged_by=STAFF)
    assert worker_resolves(mine)
    assert not worker_resolves(dataclasses.replace(mine, acknowledged_by="ola"))
    assert not worker_resolves(dataclasses.replace(mine, state=AlertState.RESOLVED))


def test_the_script_remembers_a_bounded_number_of_events() -> None:
    script = Script()
    for n in range(demo.SCRIPT_MEMORY + 1):
        script.note(f"demo-{n}")
    assert not script.raised(raised_by("demo-0")) and script.raised(raised_by(f"demo-{demo.SCRIPT_MEMORY}"))


def test_the_readme_resident_is_never_in_the_script() -> None:
    registry = demo_registry()
    assert any(r.id == YOURS and r.team == "east" for r in registry.residents)
    for round_no in range(len(registry.residents) * 2):
        assert YOURS not in {r.id for r, _ in demo.cast(registry, round_no)}


class Stage:
    """The alert stage as the worker uses it: alerts by id, their changes on a real hub,
    take and resolve with the life cycle's refusals."""

    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}
        self.hub = AlertHub(50)
        self.actions: list[tuple[str, str, str]] = []

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    def unsubscribe(self, subscription: Subscription) -> None:
        self.hub.unsubscribe(subscription)

    def get(self, alert_id: str) -> Alert:
        if alert_id not in self.alerts:
            raise AlertNotFound(alert_id)
        return self.alerts[alert_id]

    def change(self, alert: Alert) -> None:
        self.alerts[alert.alert_id] = alert
        self.hub.publish(alert)

    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        alert = self.get(alert_id)
        if alert.state is not AlertState.OPEN:
            raise IllegalTransition(alert_id, alert.state, AlertState.ACKNOWLEDGED)
        self.actions.append(("take", alert_id, actor))
        self.change(dataclasses.replace(alert, state=AlertState.ACKNOWLEDGED, acknowledged_by=actor))
        return self.alerts[alert_id]

    def resolve(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        self.actions.append(("resolve", alert_id, actor))
        self.change(dataclasses.replace(self.get(alert_id), state=AlertState.RESOLVED, resolved_by=actor))
        return self.alerts[alert_id]


def test_the_worker_leaves_a_persons_alert_and_one_a_person_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "STAFF_PACE", {})
    monkeypatch.setattr(demo, "OTHER_PACE", (0.05, 0.05))

    async def scenario() -> Stage:
        stage = Stage()
        script = Script()
        script.note("demo-a")
        script.note("demo-b")
        services = cast(Any, type("Services", (), {"alerts": stage})())
        worker = asyncio.create_task(demo.staff(services, script))
        await asyncio.sleep(0)
        stage.change(raised_by("demo-a", "scripted"))
        stage.change(raised_by("demo-b", "taken-by-ola"))
        stage.change(raised_by("readme-1", "published-by-a-person"))
        await asyncio.sleep(0.01)
        stage.acknowledge("taken-by-ola", "ola")  # before the worker's turn
        await asyncio.sleep(0.3)
        worker.cancel()
        return stage

    stage = asyncio.run(scenario())
    assert stage.actions == [("take", "taken-by-ola", "ola"),
                             ("take", "scripted", STAFF), ("resolve", "scripted", STAFF)]
    assert stage.alerts["taken-by-ola"].state is AlertState.ACKNOWLEDGED
    assert stage.alerts["published-by-a-person"].state is AlertState.OPEN
