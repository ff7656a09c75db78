"""MQTT ingress: subscribe, parse, validate against the contract, hand on, make durable.

The subscriber (gateway/connection.py) receives on an asyncio loop: `trygg up`'s own,
so a valid event is handed to the processors in the same callback that read it, before
the commit; alone (`trygg gateway`, tests) a loop on a thread of its own. A message is
acknowledged (PUBACK) by the durability loop only after it is committed to PostgreSQL or
fsync'ed to the spool. Alarms, falls and smoke go to the rules before the background
traffic around them: first within a read, and while a large read is handled the socket
is read every `POLL_EVERY` messages for an alarm that arrived meanwhile (whatever else
it holds waits behind that read, in order). The session is persistent (MQTT 5 session
expiry, or clean session false on 3.1.1) under a stable client id, so events published
while Trygg is down wait in the broker. While a durable writer's queue is full the
subscriber stops reading (back-pressure); the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from gateway import metrics
from gateway.connection import Subscriber
from gateway.durable import DurableWriter, Pending
from gateway.spool import Record, Spool
from gateway.validate import Validator
from gateway.wire import MQTT5, MQTT311, Message
from storage import DeadLetter, EventStore, StatusRow
from trygg.contract import (
    Event,
    InvalidMessage,
    utcnow,
)
from trygg.logging import get_logger
from trygg.pipeline import DeviceStatus, EventSink, discard
from trygg.registry import Registry

log = get_logger("trygg.gateway")

SESSION_EXPIRY_S = 7 * 24 * 3600
RECENT_KEYS = 200_000
#: while handling a read, the socket is read for alarms every this many messages
POLL_EVERY = 8
#: event types that go through the rules first when a buffer holds several messages
_URGENT = re.compile(rb'"(?:alarm|fall|smoke)\.')


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 1883,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:  # paho on_socket_open
    """Nagle's algorithm costs ~40 ms stalls on small messages (DESIGN.md §9)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(slots=True)
class _Read:
    """Messages of one read of the socket."""

    messages: list[Message]
    generation: int
    received_at: datetime
    early: dict[int, Record | None]  # by position: the alarm lane's, handled already


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Gateway:
    """One MQTT ingress. `start()` connects and runs; `stop()` drains and disconnects."""

    def __init__(
        self,
        broker: BrokerAddress,
        conninfo: str,
        spool_dir: Path,
        registry: Registry,
        *,
        writers: int = 2,
        prefix: str = "trygg/v1",
        client_id: str = "trygg",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        receive_maximum: int = 10_000,
        sink: EventSink = discard,
        emergency_open: Callable[[str], bool] = lambda resident_id: False,
        batch_max: int = 2000,
        batch_wait_s: float = 0.005,
        queue_max: int = 20_000,
        retry_s: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._broker = broker
        self._prefix = prefix
        self._sink = sink
        self._validator = Validator(registry, prefix, emergency_open)
        self._clock = clock
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._backlog: deque[_Read] = deque()  # reads waiting for a turn of the loop
        self._drain_scheduled = False
        self._busy = False  # handling a read: a read that comes meanwhile waits behind it
        # One durability loop per shard of devices: each has its own connection and
        # spool, so a device's events stay in order while shards commit in parallel.
        shard_dirs = [spool_dir / f"shard-{i}" for i in range(writers)]
        orphans = [Spool(d) for d in sorted(spool_dir.glob("shard-*")) if d not in shard_dirs]
        self.writers = [
            DurableWriter(
                EventStore(conninfo), Spool(shard_dir), self._ack,
                batch_max=batch_max, batch_wait_s=batch_wait_s,
                queue_max=max(queue_max // writers, 100), retry_s=retry_s,
                orphans=orphans if i == 0 else (), on_room=self._room,
            )
            for i, shard_dir in enumerate(shard_dirs)
        ]
        self._received_events = metrics.RECEIVED.labels("events")
        self._received_status = metrics.RECEIVED.labels("status")
        self._subscriber = Subscriber(
            broker.host, broker.port, client_id,
            [f"{prefix}/devices/+/events", f"{prefix}/devices/+/status"],
            self._on_messages,
            version=MQTT5 if protocol == MQTTProtocolVersion.MQTTv5 else MQTT311,
            username=broker.username, password=broker.password,
            receive_maximum=receive_maximum, on_state=self._on_state, loop=loop,
        )

    @property
    def connected(self) -> threading.Event:
        return self._subscriber.subscribed

    # -- registry ---------------------------------------------------------------------

    def set_registry(self, registry: Registry) -> None:
        """Swap in a reloaded registry (one assignment: safe against the MQTT thread)."""
        self._validator.set_registry(registry)

    # -- life cycle -------------------------------------------------------------------

    @property
    def database_ok(self) -> bool:
        return all(w.database_ok for w in self.writers)

    def start(self, timeout: float = 10.0) -> None:
        for writer in self.writers:
            writer.start()
        try:
            self._subscriber.start(timeout)
        except BaseException:
            for writer in self.writers:
                writer.stop()
            raise
        log.info("connected to broker", broker=str(self._broker))

    def stop(self) -> None:
        """Make what was received durable and acknowledge it, then disconnect."""
        loop = self._subscriber.loop
        if loop is not None and loop.is_running():  # reads still waiting for a turn of the loop
            drained = threading.Event()
            self._subscriber.call(lambda: self._when_drained(drained))
            drained.wait(5)
        for writer in self.writers:
            writer.idle.wait(10)
        self._subscriber.stop()
        for writer in self.writers:
            writer.stop()

    # -- receiving loop ---------------------------------------------------------------

    def _on_state(self, up: bool, why: str) -> None:
        metrics.BROKER_UP.set(1 if up else 0)
        if not up:
            log.warning("broker connection lost, reconnecting", broker=str(self._broker), error=why)

    def _ack(self, mids: list[int], generation: int) -> None:
        self._subscriber.ack(mids, generation)

    def _on_messages(self, messages: list[Message], generation: int) -> None:
        received_at = self._clock()
        # The alarm lane: alarms, falls and smoke in this read reach the rules before the
        # rest of it and before the reads still waiting (each device's events keep their
        # order within either lane; storage keeps the order received).
        waiting = self._backlog or self._busy
        early = {i: self._record(msg, received_at) for i, msg in enumerate(messages)
                 if _URGENT.search(msg.payload)} if len(messages) > 1 or waiting else {}
        read = _Read(messages, generation, received_at, early)
        loop = _running_loop()
        if waiting and loop is not None:
            # Read while another read is handled (`read_now`), or while reads wait: it
            # waits behind them, so a device's events keep their order.
            self._backlog.append(read)
            if not self._busy:  # else the drain is scheduled once the read being handled ends
                self._drain_soon(loop)
            return
        self._queue_read(read)
        if self._backlog and loop is not None:  # read meanwhile
            self._drain_soon(loop)

    def _drain_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle the backlog in a later turn of the loop, so that reading the socket
        for alarms never keeps the loop from its other work (acknowledgements, timers,
        the dashboard)."""
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop.call_soon(self._drain_backlog)

    def _drain_backlog(self) -> None:
        """The reads that waited, oldest first; those that came meanwhile in a later turn."""
        self._drain_scheduled = False
        for _ in range(len(self._backlog)):
            self._queue_read(self._backlog.popleft())
        if self._backlog:
            self._drain_soon(asyncio.get_running_loop())

    def _when_drained(self, drained: threading.Event) -> None:
        if self._backlog:
            asyncio.get_running_loop().call_soon(self._when_drained, drained)
        else:
            drained.set()

    def _queue_read(self, read: _Read) -> None:
        """Validate and hand on what `read.early` did not, then queue it to be made
        durable. Every `POLL_EVERY` messages the socket is read for alarms that arrived
        meanwhile (`Connection.read_now`): they are handed on at once, the rest of what
        it read waits behind this read."""
        messages, early, received_at = read.messages, read.early, read.received_at
        shards = len(self.writers)
        chunks = [Pending([], [], read.generation) for _ in range(shards)]
        status = 0
        self._busy = True
        try:
            for i, msg in enumerate(messages):
                if i % POLL_EVERY == POLL_EVERY - 1:
                    self._subscriber.read_now()
                record = early[i] if i in early else self._record(msg, received_at)
                if record is None:  # a position without legal basis: not stored, not used
                    chunk = chunks[0]  # acknowledged once what came before it is durable
                elif isinstance(record, DeadLetter):
                    chunk = chunks[0]
                    chunk.records.append(record)
                else:
                    chunk = chunks[zlib.crc32(record.device_id.encode()) % shards]
                    chunk.records.append(record)
                    status += isinstance(record, StatusRow)
                if msg.qos:
                    chunk.mids.append(msg.mid)
        finally:
            self._busy = False
        self._received_status.inc(status)
        self._received_events.inc(len(messages) - status)
        full = False
        for writer, chunk in zip(self.writers, chunks, strict=True):
            if chunk.records or chunk.mids:
                full |= writer.put(chunk)
        if full:
            metrics.BACKPRESSURE.inc()
            self._subscriber.pause_reading()

    def _room(self) -> None:  # a writer's thread
        self._subscriber.call(self._resume)

    def _resume(self) -> None:
        if not any(w.full for w in self.writers):
            self._subscriber.resume_reading()

    def _record(self, msg: Message, received_at: datetime) -> Record | None:
        """What to store for one message (a dead letter when invalid); hands it on."""
        try:
            return self._accept(msg.topic, msg.payload, received_at)
        except InvalidMessage as exc:
            topic = msg.topic if isinstance(msg.topic, str) else repr(msg.topic)
            metrics.DEAD_LETTERS.labels(exc.reason.value).inc()
            return DeadLetter(received_at, topic, msg.payload, exc.reason.value, exc.detail)

    def _accept(self, topic: str | bytes, payload: bytes, received_at: datetime) -> Event | StatusRow | None:
        item = self._validator.accept(topic, payload, received_at)
        if item is None:
            return None
        if isinstance(item, DeviceStatus):
            self._hand_on(item)
            return StatusRow(item.device_id, item.online, received_at)
        key = (item.device_id, item.event_id)
        if key in self._recent:
            return item  # re-sent: stored once by the store's key, not handed on again
        self._recent[key] = None
        if len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)
        self._hand_on(item)
        return item

    def _hand_on(self, item: Event | DeviceStatus) -> None:
        try:
            self._sink(item)
        except Exception:
            # The event is still made durable; the rules see it again after a restart.
            log.exception("processor hand-off failed", device_id=item.device_id)
