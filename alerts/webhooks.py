"""Optional webhooks per team (registry `webhook_url`): an HTTP POST of the alert JSON.

`send` only queues (`put_nowait` on a bounded queue, on the event loop's thread), so the
alert path never waits for a slow receiver. Each destination (a team and its URL) has a
lane of its own: a bounded queue and one worker task, created when the first delivery
for it arrives and retired after `idle_s` without work. A receiver that hangs or fails
therefore holds only its own team's lane; another team's POST goes out at once (STYLE.md
"a shared pool or worker set is partitioned by who may starve whom"). One worker per
lane also keeps one receiver's deliveries in order, retries aside.

A failure (connection error, timeout, 5xx, 408, 425, 429) is retried with jittered
exponential backoff up to `attempts` times, without holding the lane's worker while it
waits. Other 4xx answers are not retried. A delivery given up, refused because its
lane's queue is full, or refused because `lanes_max` destinations are already busy, is
counted in `trygg_alert_deliveries_failed{channel="webhook"}` and by team in
`trygg_webhook_deliveries{team, result}`; `trygg_webhook_pending{team}` shows each
lane's backlog.

Receivers should treat the body as the alert's latest state by `alert_id`, and use
`updated_at` to ignore an older state that arrives late after a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter, Gauge

from alerts import metrics
from trygg.alert import Alert
from trygg.backoff import Backoff
from trygg.logging import get_logger

log = get_logger(__name__)

RETRY_STATUS: Final = frozenset({408, 425, 429})

DELIVERIES: Final = Counter("trygg_webhook_deliveries", "Webhook deliveries by team and result "
                            "(delivered, retried, given_up, refused)", ["team", "result"])
PENDING: Final = Gauge("trygg_webhook_pending", "Webhook deliveries queued or waiting to retry, by team",
                       ["team"])


@dataclass(slots=True)
class _Delivery:
    lane: tuple[str, str]
    body: bytes
    alert_id: str
    attempt: int = 0
    #: the delays between its attempts (from its first retry on)
    backoff: Backoff | None = None


@dataclass(slots=True, eq=False)
class _Lane:
    """One destination: its bounded queue, its worker (None while none runs), and the
    deliveries of it that wait to be retried."""

    url: str
    team: str
    queue: asyncio.Queue[_Delivery]
    worker: asyncio.Task[None] | None = None
    retrying: int = 0
    retries: set[asyncio.TimerHandle] = field(default_factory=set)

    @property
    def pending(self) -> int:
        return self.queue.qsize() + self.retrying


def _team_label(url: str) -> str:
    """The metrics label of a destination sent without a team: its host (never the
    path or query, which may carry a secret)."""
    try:
        return urlsplit(url).hostname or "unknown"
    except ValueError:
        return "unknown"


class WebhookSender:
    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        attempts: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 5.0,
        queue_max: int = 1_000,
        lanes_max: int = 256,
        idle_s: float = 60.0,
    ) -> None:
        """`queue_max` bounds each destination's queue; `lanes_max` the destinations
        with work at one time; a lane idle for `idle_s` seconds ends its worker."""
        self._client = client
        self._own_client = client is None
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        self._queue_max = queue_max
        self._lanes_max = lanes_max
        self._idle_s = idle_s
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._group: asyncio.TaskGroup | None = None
        self.delivered = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return sum(lane.pending for lane in self._lanes.values())

    @property
    def lanes(self) -> int:
        """Destinations with a lane now (work queued, retrying, or idle for < idle_s)."""
        return len(self._lanes)

    def send(self, url: str, alert: Alert, team: str | None = None) -> bool:
        """Queue one POST of the alert's contract JSON to `team`'s receiver; False (and
        counted as failed) when that destination's queue is full or too many
        destinations are busy."""
        label = team if team is not None else _team_label(url)
        delivery = _Delivery((label, url), alert.wire_payload(), alert.alert_id)
        return self._enqueue(delivery)

    def _enqueue(self, delivery: _Delivery) -> bool:
        lane = self._lanes.get(delivery.lane)
        if lane is None:
            team, url = delivery.lane
            if len(self._lanes) >= self._lanes_max:
                self._give_up(delivery, team, "refused", f"more than {self._lanes_max} webhook destinations busy")
                return False
            lane = self._lanes[delivery.lane] = _Lane(url, team, asyncio.Queue(maxsize=self._queue_max))
        try:
            lane.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._give_up(delivery, lane.team, "refused", f"queue of {self._queue_max} full")
            return False
        self._gauge(lane.team)
        if lane.worker is None and self._group is not None:
            self._start(lane)
        return True

    def _start(self, lane: _Lane) -> None:
        assert self._group is not None
        lane.worker = self._group.create_task(self._worker(lane), name=f"alerts.webhooks.{lane.team}")

    def _gauge(self, team: str) -> None:
        """`trygg_webhook_pending{team}`: the team's lanes' backlog (gone with its lanes)."""
        lanes = [lane for lane in self._lanes.values() if lane.team == team]
        if lanes:
            PENDING.labels(team).set(sum(lane.pending for lane in lanes))
        else:
            with contextlib.suppress(KeyError):
                PENDING.remove(team)

    def _give_up(self, delivery: _Delivery, team: str, result: str, why: str) -> None:
        self.failed += 1
        metrics.DELIVERIES_FAILED.labels("webhook").inc()
        DELIVERIES.labels(team, result).inc()
        log.warning("webhook_delivery_given_up", alert_id=delivery.alert_id, team=team,
                    url=delivery.lane[1], attempts=delivery.attempt, reason=why)

    async def run(self) -> None:
        """POST queued deliveries until cancelled."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for key, lane in list(self._lanes.items()):  # queued before (or since) the last run
                    if lane.queue.empty():
                        del self._lanes[key]
                    else:
                        self._start(lane)
                await asyncio.Future()  # until cancelled; the lanes' workers run in the group
        finally:
            self._group = None
            pending = self.pending
            for lane in self._lanes.values():
                lane.worker = None
                for handle in lane.retries:
                    handle.cancel()
                lane.retries.clear()
                lane.retrying = 0
            if pending:
                log.warning("webhook_deliveries_left_at_shutdown", pending=pending)
            if self._own_client:
                await self._client.aclose()
                self._client = None

    async def _worker(self, lane: _Lane) -> None:
        client = self._client
        assert client is not None
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(self._idle_s):
                    delivery = await lane.queue.get()
            except TimeoutError:
                if lane.queue.empty():  # nothing came: retire (a later send starts a new lane)
                    lane.worker = None
                    if lane.retrying == 0 and self._lanes.get((lane.team, lane.url)) is lane:
                        del self._lanes[(lane.team, lane.url)]
                        self._gauge(lane.team)
                    return
                continue
            delivery.attempt += 1
            why = await self._post(client, lane, delivery)
            if why is None:
                self.delivered += 1
                DELIVERIES.labels(lane.team, "delivered").inc()
            elif why.startswith("retry:") and delivery.attempt < self._attempts:
                DELIVERIES.labels(lane.team, "retried").inc()
                self._retry_later(lane, delivery)
            else:
                self._give_up(delivery, lane.team, "given_up", why.removeprefix("retry:"))
            self._gauge(lane.team)

    async def _post(self, client: httpx.AsyncClient, lane: _Lane, delivery: _Delivery) -> str | None:
        """None when delivered; "retry:<why>" when worth trying again; else why not."""
        try:
            response = await client.post(
                lane.url, content=delivery.body,
                headers={"Content-Type": "application/json", "X-Trygg-Alert-Id": delivery.alert_id},
            )
        except httpx.HTTPError as exc:
            return f"retry:{type(exc).__name__}: {exc}"
        except Exception as exc:  # e.g. a URL httpx cannot use: this delivery's problem only
            return f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return None
        if response.status_code >= 500 or response.status_code in RETRY_STATUS:
            return f"retry:HTTP {response.status_code}"
        return f"HTTP {response.status_code}"

    def _retry_later(self, lane: _Lane, delivery: _Delivery) -> None:
        if delivery.backoff is None:
            delivery.backoff = Backoff(self._backoff_s, self._backoff_max_s, jitter=(0.8, 1.2))
        delay = delivery.backoff.next()
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def again() -> None:
            lane.retries.discard(handle)
            lane.retrying -= 1
            self._enqueue(delivery)

        handle = loop.call_later(delay, again)
        lane.retries.add(handle)
        lane.retrying += 1


__all__ = ["WebhookSender"]
