"""Reading and writing the cluster's streams for a resident partition (docs/cluster.md):
`AlertMirror` puts alert changes on TRYGG_ALERTS; `read_to_end` reads what a consumer
configuration selects up to the end of a stream (the replay of a new owner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Final

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError

from alerts.journal import Item
from cluster.layout import ALERTS_STREAM, alert_subject, cancel_not_lost, election_backoff, settled
from composition.cluster_wire import alert_item_bytes
from trygg.backoff import Backoff
from trygg.logging import get_logger

log = get_logger(__name__)

#: changes put on the stream at a time
BATCH: Final = 500
#: how long a fetch waits for messages (seconds)
FETCH_WAIT_S: Final = 1.0
#: publish acknowledgement timeout of one alert change (seconds)
MIRROR_PUBLISH_TIMEOUT_S: Final = 5.0
#: a new owner's reading of a stream (its restore) starts within this long, or is asked
#: again: a request that went to a node as it died is not waited out for 5 s
READ_ATTEMPT_S: Final = 2.0


class AlertMirror:
    """Alert changes onto TRYGG_ALERTS (`alert_subject(rp, id)`, the journal record), in
    the order made for each alert, each until the stream acknowledged it; failures are
    retried with backoff (a re-sent change has the same message id, the stream keeps it
    once), except a change the stream refuses for what it is, which is given up with an
    error (PostgreSQL still gets it). `put` from the loop's thread; never blocks."""

    def __init__(self, js: JetStreamContext, partition: int) -> None:
        self._js = js
        self._partition = partition
        self._queue: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        #: changes put so far, and of those on the stream
        self.queued = 0
        self.done = 0

    @property
    def backlog(self) -> int:
        return self.queued - self.done

    def put(self, item: Item) -> None:
        self._queue.append(item)
        self.queued += 1
        self._wake.set()

    async def flush(self, timeout_s: float) -> bool:
        """Until every change put so far is on the stream, or `timeout_s`."""
        target = self.queued
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.done < target:
                    self._progress.clear()
                    await self._progress.wait()
        return self.done >= target

    async def run(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                cancel_not_lost()
                batch = list(self._queue)[:BATCH]
                try:
                    await self._publish(batch)
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    log.warning("alert_changes_not_on_stream_retrying", partition=self._partition,
                                changes=len(batch), error=str(exc) or repr(exc))
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                for _ in batch:
                    self._queue.popleft()
                self.done += len(batch)
                self._progress.set()

    async def _publish(self, batch: list[Item]) -> None:
        """Each alert's changes in order; different alerts at the same time."""
        chains: dict[str, list[Item]] = {}
        for item in batch:
            chains.setdefault(item[0].alert_id, []).append(item)
        await asyncio.gather(*(self._chain(items) for items in chains.values()))

    async def _chain(self, items: list[Item]) -> None:
        for item in items:
            alert = item[0]
            try:
                await self._js.publish(alert_subject(self._partition, alert.alert_id), alert_item_bytes(item),
                                       timeout=MIRROR_PUBLISH_TIMEOUT_S, stream=ALERTS_STREAM,
                                       headers={"Nats-Msg-Id": f"{alert.alert_id}/{alert.version}"})
            except (BadRequestError, nats.errors.MaxPayloadError, TypeError, ValueError) as exc:
                # refused for what it is: trying again would stop every later change
                log.error("alert_change_refused_by_stream_given_up", alert_id=alert.alert_id,
                          version=alert.version, error=str(exc) or repr(exc))


async def read_to_end(js: JetStreamContext, stream: str, config: ConsumerConfig,
                       handle: Callable[[Msg], None], batch: int, *, most: int | None = None) -> None:
    """Every message `config` selects (the first `most` of them), up to the end of the
    stream as it is when the reading starts, through an ephemeral consumer (deleted after)."""
    config.ack_policy = AckPolicy.NONE
    config.mem_storage = True
    config.num_replicas = 1
    config.inactive_threshold = 60.0  # one made by an attempt given up is removed by the server
    sub = await settled(f"read {stream}",
                        lambda: js.pull_subscribe(config.filter_subject or ">", stream=stream, config=config),
                        attempt_s=READ_ATTEMPT_S, backoff=election_backoff())
    name = ""
    try:
        info = await settled(f"read {stream}", sub.consumer_info, attempt_s=READ_ATTEMPT_S,
                             backoff=election_backoff())
        name, left = info.name, info.num_pending or 0
        if most is not None:
            left = min(left, most)
        while left > 0:
            try:
                msgs = await sub.fetch(min(batch, left), timeout=FETCH_WAIT_S)
            except TimeoutError:  # gone meanwhile (the stream's limits)?
                left = min(left, (await sub.consumer_info()).num_pending or 0)
                continue
            for msg in msgs:
                handle(msg)
            left -= len(msgs)
            await asyncio.sleep(0)  # a long replay lets the alert stage's timers run
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if name:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, name)


async def first_seq(js: JetStreamContext, stream: str, config: ConsumerConfig) -> int | None:
    """The stream sequence of the first message `config` selects; None if there is none."""
    first: list[int] = []

    def take(msg: Msg) -> None:
        first.append(msg.metadata.sequence.stream)

    await read_to_end(js, stream, config, take, 1, most=1)
    return first[0] if first else None
