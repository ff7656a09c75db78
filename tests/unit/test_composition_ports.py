"""The ports `trygg up` wires between the stages (composition/app.py): which residents'
positions the gateway may use in an emergency, and a resolved alert reaching the rules.
And what it checks before it starts anything (composition/runtime.py): the data
directory is held by one process at a time, the dashboard's port is free, and the
embedded broker's port of the last start is tried first."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from alerts import AlertHub, Subscription
from composition.app import LateAlertClosed, OpenEmergencies
from composition.broker import port_is_free
from composition.runtime import BROKER_PORT_FILE, DataDirInUse, _remembered_port, bind_http, hold_data_dir
from tests.helpers import alert_doc
from trygg.alert import Alert
from trygg.contract import AlertKind
from trygg.errors import TryggError
from trygg.settings import Settings


class Alerts:
    """The alert stage as OpenEmergencies reads it: the unresolved alerts now, and the
    real hub its changes are offered on (a small limit per subscriber)."""

    def __init__(self, limit: int = 5) -> None:
        self.unresolved: list[Alert] = []
        self.hub = AlertHub(limit)

    def active(self) -> list[Alert]:
        return self.unresolved

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    def unsubscribe(self, subscription: Subscription) -> None:
        self.hub.unsubscribe(subscription)

    def change(self, alert: Alert) -> None:
        self.unresolved = [a for a in self.unresolved if a.alert_id != alert.alert_id]
        if alert.active:
            self.unresolved.append(alert)
        self.hub.publish(alert)


def alert(resident: str, kind: str, state: str) -> Alert:
    return alert_doc(f"a-{resident}-{kind}", resident, "east", kind=kind, state=state)


def test_positions_are_needed_while_an_alarm_or_fall_is_open_or_acknowledged() -> None:
    alerts = Alerts()
    emergencies = OpenEmergencies(cast(Any, alerts))
    emergencies.note(alert("r-1", "door_open", "open"))
    assert not emergencies.emergency_open("r-1"), "only alarms and falls are emergencies"

    alarm, fall = alert("r-1", "alarm", "open"), alert("r-1", "fall", "acknowledged")
    alerts.unresolved = [alarm, fall]
    emergencies.note(alarm)
    emergencies.note(fall)
    assert emergencies.emergency_open("r-1")
    assert not emergencies.emergency_open("r-2")

    alerts.unresolved = [fall]
    emergencies.note(alert("r-1", "alarm", "resolved"))
    assert emergencies.emergency_open("r-1"), "the fall is still acknowledged"
    alerts.unresolved = []
    emergencies.note(alert("r-1", "fall", "resolved"))
    assert not emergencies.emergency_open("r-1")


def test_a_resolved_alert_reaches_the_rules_bound_after_the_alert_stage() -> None:
    closed: list[tuple[str, AlertKind, str | None]] = []

    class Rules:
        def alert_closed(self, resident_id: str, kind: AlertKind, device_id: str | None) -> None:
            closed.append((resident_id, kind, device_id))

    port = LateAlertClosed()
    with pytest.raises(RuntimeError):
        port.alert_closed("r-1", AlertKind.ALARM, None)
    port.bind(Rules())
    port.alert_closed("r-1", AlertKind.DEVICE_OFFLINE, "d-1")
    assert closed == [("r-1", AlertKind.DEVICE_OFFLINE, "d-1")]


def test_alarms_open_before_the_gateway_reads_count_from_the_first_position() -> None:
    alerts = Alerts()
    alerts.unresolved = [alert("r-1", "alarm", "acknowledged"), alert("r-2", "door_open", "open")]
    emergencies = OpenEmergencies(cast(Any, alerts))
    emergencies.open()  # what `serve` does before it starts the gateway
    assert emergencies.emergency_open("r-1")
    assert not emergencies.emergency_open("r-2")


def test_a_burst_of_changes_larger_than_the_subscription_does_not_lose_the_emergency_state() -> None:
    """More changes at once than the subscription holds (a wave of offline alerts, alerts
    restored when PostgreSQL returns) drop the subscription: the state is taken again
    from the stage and followed on, and the task does not end (it would end the process)."""

    async def scenario() -> tuple[bool, bool, bool]:
        alerts = Alerts(limit=5)
        emergencies = OpenEmergencies(cast(Any, alerts))
        emergencies.open()
        task = asyncio.create_task(emergencies.run())
        await asyncio.sleep(0)
        for n in range(20):  # one batch, no await between: the subscription overflows
            alerts.change(alert(f"r-{n}", "alarm", "open"))
        await asyncio.sleep(0.01)
        all_seen = all(emergencies.emergency_open(f"r-{n}") for n in range(20))
        alerts.change(alert("r-0", "alarm", "resolved"))
        await asyncio.sleep(0.01)
        followed = not emergencies.emergency_open("r-0")
        running = not task.done()
        task.cancel()
        return all_seen, followed, running

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_held_data_directory_names_its_holder(tmp_path: Path) -> None:
    fd = hold_data_dir(tmp_path / "data")
    try:
        # a second open file description of the same file: refused as another process is
        with pytest.raises(DataDirInUse) as refused:
            hold_data_dir(tmp_path / "data")
        assert re.fullmatch(rf"the data directory {re.escape(str(tmp_path / 'data'))} is in use by process "
                            rf"{os.getpid()} \(since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); .+", str(refused.value))
    finally:
        os.close(fd)
    os.close(hold_data_dir(tmp_path / "data"))  # released: free again


def test_a_taken_http_port_is_refused_and_a_free_one_is_held(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TryggError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*in use"):
            bind_http(Settings(http_port=port, data_dir=tmp_path))  # type: ignore[call-arg]
        assert not port_is_free("127.0.0.1", port)
    assert bind_http(Settings(http_port=0, data_dir=tmp_path)) is None  # type: ignore[call-arg]
    held = bind_http(Settings(http_port=port, data_dir=tmp_path))  # type: ignore[call-arg]
    assert held is not None
    with held, socket.socket() as other, pytest.raises(OSError):  # held until the dashboard serves on it
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        other.bind(("127.0.0.1", port))


def test_the_remembered_broker_port_is_read_back_and_nonsense_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / BROKER_PORT_FILE
    assert _remembered_port(path) is None
    for text, port in (("1884\n", 1884), ("lots", None), ("0", None), ("70000", None)):
        path.write_text(text)
        assert _remembered_port(path) == port, text
