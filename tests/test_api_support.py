"""An in-memory AlertsPort for the route-level API tests (tests/fix_api.py serves the app
with it): alerts in a dict with the lifecycle of docs/contract.md, changes pushed to
subscribers on their own event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dashboard import AlertNotFound, AlertsPort, IllegalTransition
from tests.helpers import alert_doc


@dataclass
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    teams: frozenset[str] | None
    wake: Callable[[], None]

    def deliver(self, doc: dict[str, Any]) -> None:  # on the subscriber's loop
        self.queue.put_nowait(doc)
        self.wake()


@dataclass
class MemoryFeed:
    alerts: MemoryAlerts
    entry: Subscriber

    def get_nowait(self) -> dict[str, Any] | None:
        try:
            return self.entry.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        with self.alerts.lock:
            self.alerts.subscribers.remove(self.entry)


@dataclass
class MemoryAlerts:
    """Alerts in a dict with the lifecycle of DESIGN.md §4; changes go to subscribers,
    which may live on another thread's event loop."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscribers: list[Subscriber] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.alerts = {
                "a-east": alert_doc("a-east", "r-1", "east"),
                "a-west": alert_doc("a-west", "r-2", "west"),
                "a-east-low": alert_doc("a-east-low", "r-3", "east", kind="battery_low", priority="low"),
            }

    def put(self, doc: dict[str, Any]) -> None:
        """Add or change an alert (from any thread) and tell the subscribers."""
        with self.lock:
            self.alerts[doc["alert_id"]] = doc
            subscribers = list(self.subscribers)
        for sub in subscribers:
            if sub.teams is None or set(doc["teams"]) & sub.teams:
                sub.loop.call_soon_threadsafe(sub.deliver, dict(doc))

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> list[dict[str, Any]]:
        with self.lock:
            docs = [dict(d) for d in self.alerts.values()]
        return [d for d in docs if (teams is None or set(d["teams"]) & teams)
                and (state is None or d["state"] == state)
                and (since is None or datetime.fromisoformat(d["updated_at"]) >= since)]

    async def get(self, alert_id: str) -> dict[str, Any] | None:
        with self.lock:
            doc = self.alerts.get(alert_id)
        return dict(doc) if doc else None

    def _step(self, alert_id: str, allowed: tuple[str, ...], to_state: str, **changes: Any) -> dict[str, Any]:
        with self.lock:
            doc = self.alerts.get(alert_id)
            if doc is None:
                raise AlertNotFound(alert_id)
            if doc["state"] not in allowed:
                raise IllegalTransition(alert_id, doc["state"], to_state)
            doc = {**doc, "state": to_state, "updated_at": datetime.now(UTC).isoformat(), **changes}
        self.put(doc)
        return dict(doc)

    async def acknowledge(self, alert_id: str, actor: str) -> dict[str, Any]:
        return self._step(alert_id, ("open",), "acknowledged", acknowledged_by=actor)

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> dict[str, Any]:
        return self._step(alert_id, ("open", "acknowledged"), "resolved", resolved_by=actor, note=note)

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> MemoryFeed:
        entry = Subscriber(asyncio.get_running_loop(), asyncio.Queue(), teams, wake)
        with self.lock:
            self.subscribers.append(entry)
        return MemoryFeed(self, entry)

    async def open_alerts_of(self, resident_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(d) for d in self.alerts.values()
                    if d["resident_id"] == resident_id and d["state"] in ("open", "acknowledged")]


def test_memory_alerts_is_an_alerts_port() -> None:
    assert isinstance(MemoryAlerts(), AlertsPort)
