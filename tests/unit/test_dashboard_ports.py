"""StageAlerts: the alerts stage seen through the dashboard's AlertsPort."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dashboard import AlertsPort, StageAlerts
from dashboard.errors import AlertNotFound


@dataclass
class FakeAlert:
    teams: tuple[str, ...]


@dataclass
class FakeService:
    alerts: dict[str, FakeAlert]

    def get(self, alert_id: str) -> FakeAlert:
        if alert_id not in self.alerts:
            raise AlertNotFound(alert_id)
        return self.alerts[alert_id]


def wire(alert_id: str, state: str = "open", updated: str = "2026-11-22T12:00:00+00:00") -> dict[str, Any]:
    return {"alert_id": alert_id, "resident_id": "r-1", "team_id": "east", "state": state, "updated_at": updated}


@dataclass
class FakeSubscription:
    changes: list[dict[str, Any]]

    def get_nowait(self) -> dict[str, Any]:
        if not self.changes:
            raise asyncio.QueueEmpty
        return self.changes.pop(0)


@dataclass
class FakeStage:
    docs: list[dict[str, Any]]
    service: FakeService = field(default_factory=lambda: FakeService({"a-1": FakeAlert(("east", "centre"))}))
    unsubscribed: int = 0

    def active(self, teams: frozenset[str] | None) -> list[dict[str, Any]]:
        return list(self.docs)

    def get(self, alert_id: str) -> dict[str, Any]:
        for doc in self.docs:
            if doc["alert_id"] == alert_id:
                return doc
        raise AlertNotFound(alert_id)

    def acknowledge(self, alert_id: str, actor: str) -> dict[str, Any]:
        return {**self.get(alert_id), "state": "acknowledged", "acknowledged_by": actor}

    def resolve(self, alert_id: str, actor: str, note: str | None) -> dict[str, Any]:
        return {**self.get(alert_id), "state": "resolved", "note": note}

    def subscribe(self, teams: frozenset[str] | None, wake: object = None) -> FakeSubscription:
        return FakeSubscription([wire("a-1", "acknowledged")])

    def unsubscribe(self, subscription: object) -> None:
        self.unsubscribed += 1


def test_stage_alerts_adds_teams_and_filters() -> None:
    stage = FakeStage([wire("a-1"), wire("a-2", "acknowledged", "2026-11-22T13:00:00+00:00")])
    port = StageAlerts(stage)
    assert isinstance(port, AlertsPort)

    async def run() -> None:
        listed = await port.list(None, None, None)
        assert [(d["alert_id"], d["teams"]) for d in listed] == [("a-1", ["east", "centre"]), ("a-2", ["east"])]
        assert [d["alert_id"] for d in await port.list(None, "acknowledged", None)] == ["a-2"]
        since = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
        assert [d["alert_id"] for d in await port.list(None, None, since)] == ["a-2"]
        assert await port.list(None, "resolved", None) == []
        assert await port.get("a-9") is None
        assert (await port.acknowledge("a-1", "ola"))["teams"] == ["east", "centre"]
        assert (await port.resolve("a-2", "ola", "fine"))["note"] == "fine"
        feed = port.subscribe(None, lambda: None)
        change = feed.get_nowait()
        assert change is not None and (change["state"], change["teams"]) == ("acknowledged", ["east", "centre"])
        assert feed.get_nowait() is None
        feed.close()
        assert stage.unsubscribed == 1
        assert len(await port.open_alerts_of("r-1")) == 2

    asyncio.run(run())
