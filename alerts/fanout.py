"""In-process subscriptions to alert changes, for the dashboard's SSE stream.

`AlertHub.subscribe(teams, wake=…)` returns a `Subscription` that receives every alert
change (the alert after it, `trygg.alert.Alert`, with its teams) of an alert that reached
one of `teams` (None: every team, for
operators). Delivery is `put_nowait` on the subscriber's queue, on the event loop's
thread: the alert path never waits for a consumer. A subscriber's `wake` is then called
right there, so a consumer that can write without waiting (the console's stream) sends
the change within the call that made it; `wake` must not block, and one that raises
ends its subscription. A consumer that lets `limit` changes
pile up is dropped: it gets a marker, `Subscription.get` then raises
`SubscriptionDropped`, and the SSE client should reconnect and re-list
(`GET /api/alerts`), which is cheaper and safer than a stream with holes.

All methods run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Final

from alerts import metrics
from alerts.errors import SubscriptionDropped
from trygg.alert import Alert
from trygg.logging import get_logger

log = get_logger(__name__)

#: changes a subscriber may have waiting before it is dropped
SUBSCRIBER_LIMIT: Final = 1000



class _Dropped:
    """The marker put on a dropped subscriber's queue."""


DROPPED: Final = _Dropped()


class Subscription:
    """A stream of alert changes; `async for change in subscription` or `await get()`."""

    def __init__(self, sub_id: int, teams: frozenset[str] | None, limit: int,
                 wake: Callable[[], None] | None = None, hub: AlertHub | None = None) -> None:
        self.id = sub_id
        self._hub = hub
        self.teams = teams
        self.limit = limit
        self.wake = wake
        # bounded: `limit` changes, plus room for the marker
        self.queue: asyncio.Queue[Alert | _Dropped] = asyncio.Queue(maxsize=limit + 1)
        self.dropped = False
        self.closed = False

    def close(self) -> None:
        """Receive no more changes (the same as `AlertHub.unsubscribe`)."""
        if self._hub is not None:
            self._hub.unsubscribe(self)
        self.closed = True

    def wants(self, teams: tuple[str, ...]) -> bool:
        return self.teams is None or not self.teams.isdisjoint(teams)

    def offer(self, alert: Alert) -> bool:
        """Queue a change and wake the consumer; False (and the marker queued) when the
        subscriber is too far behind or its `wake` failed."""
        if self.closed:
            return False
        if self.queue.qsize() >= self.limit:
            self._drop()
            self._wake()  # so that it learns now
            return False
        self.queue.put_nowait(alert)
        if not self._wake():
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        self.dropped = True
        self.closed = True
        self.queue.put_nowait(DROPPED)  # there is room: the queue holds `limit` + 1

    def _wake(self) -> bool:
        if self.wake is None:
            return True
        try:
            self.wake()
        except Exception:
            log.exception("alert_subscriber_failed", subscription=self.id)
            return False
        return True

    async def get(self) -> Alert:
        """The next change; raises SubscriptionDropped once the marker is reached."""
        item = await self.queue.get()
        if isinstance(item, _Dropped):
            raise SubscriptionDropped(self.limit)
        return item

    def get_nowait(self) -> Alert:
        """Like `get`, raising asyncio.QueueEmpty when nothing is waiting."""
        item = self.queue.get_nowait()
        if isinstance(item, _Dropped):
            raise SubscriptionDropped(self.limit)
        return item

    def __aiter__(self) -> AsyncIterator[Alert]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Alert]:
        while True:
            yield await self.get()


class AlertHub:
    def __init__(self, limit: int = SUBSCRIBER_LIMIT) -> None:
        self._limit = limit
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, teams: set[str] | frozenset[str] | None = None, *, limit: int | None = None,
                  wake: Callable[[], None] | None = None) -> Subscription:
        sub = Subscription(next(self._ids), None if teams is None else frozenset(teams), limit or self._limit, wake,
                           self)
        self._subs[sub.id] = sub
        metrics.SUBSCRIBERS.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self._subs.pop(sub.id, None)
        metrics.SUBSCRIBERS.set(len(self._subs))

    def publish(self, alert: Alert) -> None:
        """Offer one change to every subscriber of a team it reached; drop the ones too
        far behind (or whose `wake` failed)."""
        dropped: list[Subscription] = []
        for sub in self._subs.values():
            if sub.wants(alert.teams) and not sub.offer(alert):
                dropped.append(sub)
        for sub in dropped:
            self.unsubscribe(sub)
            metrics.DELIVERIES_FAILED.labels("subscriber").inc()


__all__ = ["DROPPED", "SUBSCRIBER_LIMIT", "AlertHub", "Subscription"]
