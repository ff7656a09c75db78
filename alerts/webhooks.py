"""Optional webhooks per team (registry `webhook_url`): an HTTP POST of the alert JSON.

`send` only queues (`put_nowait` on a bounded queue, on the event loop's thread), so the
alert path never waits for a slow receiver. A few worker tasks POST with
`httpx.AsyncClient`; a failure (connection error, timeout, 5xx, 408, 429) is retried
with jittered exponential backoff up to `attempts` times, without holding a worker
while it waits. Other 4xx answers are not retried. A delivery given up, or refused
because the queue is full, is counted in `trygg_alert_deliveries_failed{channel="webhook"}`.

Receivers should treat the body as the alert's latest state by `alert_id`, and use
`updated_at` to ignore an older state that arrives late after a retry.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Final

import httpx

from alerts import metrics
from trygg.contract import dumps
from trygg.logging import get_logger

log = get_logger("trygg.alerts")

RETRY_STATUS: Final = frozenset({408, 425, 429})


@dataclass(slots=True)
class _Delivery:
    url: str
    body: bytes
    alert_id: str
    attempt: int = 0


class WebhookSender:
    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        attempts: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 5.0,
        queue_max: int = 10_000,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._own_client = client is None
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        self._workers = workers
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_max)
        self._retries: set[asyncio.TimerHandle] = set()
        self.delivered = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._retries)

    def send(self, url: str, wire: dict[str, Any]) -> bool:
        """Queue one POST; False (and counted as failed) when the queue is full."""
        return self._enqueue(_Delivery(url, dumps(wire), str(wire.get("alert_id", ""))))

    def _enqueue(self, delivery: _Delivery) -> bool:
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._give_up(delivery, "queue full")
            return False
        return True

    def _give_up(self, delivery: _Delivery, why: str) -> None:
        self.failed += 1
        metrics.DELIVERIES_FAILED.labels("webhook").inc()
        log.warning("webhook delivery given up", alert_id=delivery.alert_id, url=delivery.url,
                    attempts=delivery.attempt, reason=why)

    async def run(self) -> None:
        """POST queued deliveries until cancelled."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        try:
            async with asyncio.TaskGroup() as group:
                for i in range(self._workers):
                    group.create_task(self._worker(self._client), name=f"alerts.webhooks.{i}")
        finally:
            for handle in self._retries:
                handle.cancel()
            if self._retries or not self._queue.empty():
                log.warning("webhook deliveries left at shutdown", pending=self.pending)
            self._retries.clear()
            if self._own_client:
                await self._client.aclose()
                self._client = None

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            delivery = await self._queue.get()
            delivery.attempt += 1
            why = await self._post(client, delivery)
            if why is None:
                self.delivered += 1
            elif why.startswith("retry:") and delivery.attempt < self._attempts:
                self._retry_later(delivery)
            else:
                self._give_up(delivery, why.removeprefix("retry:"))

    async def _post(self, client: httpx.AsyncClient, delivery: _Delivery) -> str | None:
        """None when delivered; "retry:<why>" when worth trying again; else why not."""
        try:
            response = await client.post(
                delivery.url, content=delivery.body,
                headers={"Content-Type": "application/json", "X-Trygg-Alert-Id": delivery.alert_id},
            )
        except httpx.HTTPError as exc:
            return f"retry:{type(exc).__name__}: {exc}"
        if response.is_success:
            return None
        if response.status_code >= 500 or response.status_code in RETRY_STATUS:
            return f"retry:HTTP {response.status_code}"
        return f"HTTP {response.status_code}"

    def _retry_later(self, delivery: _Delivery) -> None:
        delay = min(self._backoff_max_s, self._backoff_s * 2 ** (delivery.attempt - 1))
        delay *= random.uniform(0.8, 1.2)
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def again() -> None:
            self._retries.discard(handle)
            self._enqueue(delivery)

        handle = loop.call_later(delay, again)
        self._retries.add(handle)


__all__ = ["WebhookSender"]
