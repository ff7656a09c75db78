"""The ports `trygg up` wires between the stages (composition/app.py): which residents'
positions the gateway may use in an emergency, and a resolved alert reaching the rules."""

from __future__ import annotations

from typing import Any, cast

import pytest

from composition.app import LateAlertClosed, OpenEmergencies
from tests.helpers import alert_doc
from trygg.alert import Alert
from trygg.contract import AlertKind


class Alerts:
    """The alert stage as OpenEmergencies reads it: the unresolved alerts now."""

    def __init__(self) -> None:
        self.unresolved: list[Alert] = []

    def active(self) -> list[Alert]:
        return self.unresolved


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
