"""StageAlerts: the alert service seen through the dashboard's AlertsPort. Alerts come
out whole (with every team they reached), filtered as the routes ask."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from dashboard import AlertsPort, StageAlerts
from tests.service_alerts import ServiceAlerts
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Priority
from trygg.registry import validate_registry

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)


def alert(alert_id: str, resident: str, at: datetime, teams: tuple[str, ...] = ("east",)) -> Alert:
    return Alert(alert_id=alert_id, resident_id=resident, team_id=teams[0], kind=AlertKind.FALL,
                 priority=Priority.HIGH, state=AlertState.OPEN, opened_at=at, updated_at=at, teams=teams)


def test_stage_alerts_hands_out_whole_alerts_and_filters() -> None:
    source = ServiceAlerts(validate_registry({"teams": [{"id": "east", "name": "Øst"}], "residents": []}),
                           clock=lambda: T0 + timedelta(hours=1))
    source.restore([alert("a-1", "r-1", T0, ("east", "centre")), alert("a-2", "r-2", T0 + timedelta(minutes=30))])
    port = StageAlerts(source)
    assert isinstance(port, AlertsPort)

    async def run() -> None:
        listed = await port.list(None, None, None)
        assert [(a.alert_id, a.teams) for a in listed] == [("a-1", ("east", "centre")), ("a-2", ("east",))]
        assert [a.alert_id for a in await port.list(frozenset({"centre"}), None, None)] == ["a-1"]
        assert [a.alert_id for a in await port.list(None, None, T0 + timedelta(minutes=20))] == ["a-2"]
        assert await port.get("a-9") is None
        feed = port.subscribe(None, lambda: None)
        assert feed.get_nowait() is None
        taken = await port.acknowledge("a-1", "ola")
        assert (taken.state, taken.acknowledged_by, taken.teams) == ("acknowledged", "ola", ("east", "centre"))
        assert [a.alert_id for a in await port.list(None, "acknowledged", None)] == ["a-1"]
        change = feed.get_nowait()
        assert change is not None and (change.alert_id, change.state) == ("a-1", "acknowledged")
        assert (await port.resolve("a-2", "ola", "fine")).note == "fine"
        assert await port.list(None, "resolved", None) == []  # the stage keeps unresolved alerts at hand
        assert [a.alert_id for a in await port.open_alerts_of("r-1")] == ["a-1"]
        feed.close()
        assert source.subscribers == []

    asyncio.run(run())
