"""The real alert lifecycle behind the dashboard, without a broker or a database: an
`AlertService` and an `AlertHub` as the dashboard sees the alerts stage
(`dashboard.AlertSource`). The API tests run against it through `StageAlerts`, so what
they acknowledge, resolve and stream is what the stage would do.

Like the stage's, its methods run on the event loop's thread that serves the dashboard.
`put` may be called from the test's thread: it hands the alert to that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from datetime import datetime

from alerts import AlertHub, AlertService, Change, Subscription
from trygg.alert import Alert
from trygg.contract import utcnow
from trygg.registry import Registry


class ServiceAlerts:
    def __init__(self, registry: Registry, clock: Callable[[], datetime] = utcnow,
                 at_start: Sequence[Alert] = ()) -> None:
        """`at_start`: the unresolved alerts the service restored when it started."""
        self._registry = registry
        self._at_start = tuple(at_start)
        self.service = AlertService(registry)
        self.hub = AlertHub()
        self.clock = clock
        #: the loop that serves the dashboard (known once a console subscribed)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()  # the test's thread puts while the loop serves
        self.restore(self._at_start)

    # ------------------------------------------------------------ dashboard.AlertSource

    def active(self, teams: frozenset[str] | None = None) -> list[Alert]:
        with self._lock:
            return self.service.active(teams)

    def get(self, alert_id: str) -> Alert:
        with self._lock:
            return self.service.get(alert_id)

    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        with self._lock:
            change = self.service.acknowledge(alert_id, actor, self.clock(), note)
        return self._offer(change)

    def resolve(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        with self._lock:
            change = self.service.resolve(alert_id, actor, self.clock(), note)
        return self._offer(change)

    def subscribe(self, teams: frozenset[str] | None = None, *,
                  wake: Callable[[], None] | None = None) -> Subscription:
        self.loop = asyncio.get_running_loop()
        subscription = self.hub.subscribe(teams, wake=wake)
        self._subscriptions.append(subscription)
        return subscription

    # ------------------------------------------------------------ for the tests

    @property
    def subscribers(self) -> list[Subscription]:
        """The subscriptions still open (one per live stream)."""
        return [s for s in self._subscriptions if not s.closed]

    def put(self, alert: Alert) -> None:
        """A new alert, as the rules raised it: the service takes it (as it takes an
        alert restored from the database) and the subscribers of its teams get it."""
        loop = self.loop
        if loop is None:  # nobody subscribed yet: nobody to tell
            self.restore([alert])
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put_here(alert)
            return
        done: Future[None] = Future()

        def put_there() -> None:
            try:
                self._put_here(alert)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(put_there)
        done.result(timeout=10)

    def reset(self) -> None:
        """Back to the alerts at start, as a service that just started."""
        with self._lock:
            self.service = AlertService(self._registry)
        self.restore(self._at_start)

    def restore(self, alerts: Iterable[Alert]) -> None:
        with self._lock:
            self.service.restore(alerts, self.clock())

    def _put_here(self, alert: Alert) -> None:
        self.restore([alert])
        self.hub.publish(alert)

    def _offer(self, change: Change) -> Alert:
        self.hub.publish(change.alert)
        return change.alert


__all__ = ["ServiceAlerts"]
