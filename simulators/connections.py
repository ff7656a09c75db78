"""MQTT connections for many simulated devices, speaking docs/contract.md#3-mqtt-contract exactly.

One MQTT connection per device is what real devices have, and far too many for a fleet
of thousands in one process. `ConnectionPool` opens a configurable number of Trygg's own
MQTT clients (`mqtt.Client`) on the running asyncio loop and spreads the devices over
them, all devices of one resident on the same connection (QoS 1 keeps order per
connection, so a resident's `door.closed` never overtakes the `door.opened` before it).
What that changes, and how it is made up for:

- **status `online`**: published explicitly, retained, QoS 1, for every device of a
  connection each time that connection is (re)established, before any of its events.
- **Last Will `offline`**: a connection has one Will, so it is set for the *first* device
  of the connection only. When the simulator dies, that device goes offline at once and
  the others are caught by the heartbeat timeout (3 × `heartbeat_s`). On a clean stop the
  pool publishes `offline` for every device itself (`close(offline=True)`).
  With `connections` >= the number of devices every device has its own Will, as in life.

Everything runs on the caller's loop: no threads (the synchronous `run_*` functions of
simulators.publisher and simulators.load run a loop of their own). QoS 1 messages not yet
acknowledged are bounded per connection (`window`): `publish` waits for the PUBACK of the
oldest when the window is full, and while its connection is down, so a slow broker slows
the simulator down and nothing queues without bound. A lost connection is reconnected by
the client, with its jittered exponential backoff, and what was not acknowledged is sent
again.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Final, Self
from urllib.parse import unquote, urlsplit

from mqtt import BrokerAddress, BrokerUnavailable, Client, Protocol, Will
from simulators.errors import BrokerError
from simulators.wire import OFFLINE, ONLINE, SimMessage
from trygg.contract import status_topic

KEEPALIVE_S: Final = 30


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where to publish: parsed from `mqtt://[user[:password]@]host[:port]`."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise BrokerError(url, "the broker URL must look like mqtt://127.0.0.1:1883")
        try:
            port = parts.port or 1883
        except ValueError:
            raise BrokerError(url, "the broker URL has a bad port") from None
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, user, password)

    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"  # never the password

    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, self.username, self.password)


@dataclass(slots=True, eq=False)
class _Conn:
    """One client and the devices it carries."""

    devices: list[str]
    client: Client = field(init=False)
    #: the futures of the publishes not yet seen acknowledged, oldest first
    unacked: deque[asyncio.Future[None]] = field(default_factory=deque)
    #: set from each CONNACK (after the announcements) until the connection is lost
    up: asyncio.Event = field(default_factory=asyncio.Event)


class ConnectionPool:
    """`connections` MQTT clients carrying the devices of `groups` (one group per resident).

        async with ConnectionPool(target, groups, prefix) as pool:   # connects (BrokerError)
            await pool.send(msg)
            await pool.close(offline=True)    # or leave: no `offline` statuses
    """

    def __init__(
        self,
        target: MqttTarget,
        groups: Sequence[Sequence[str]],
        prefix: str,
        *,
        connections: int = 4,
        window: int = 100,
        announce: bool = True,
        client_id_prefix: str = "trygg-sim",
    ) -> None:
        if connections < 1 or window < 1:
            raise ValueError("connections and window must be >= 1")
        self.target, self.prefix, self.window, self.announce = target, prefix, window, announce
        self.published = 0
        self._acked = 0
        self.online: dict[str, bool] = {}
        self._by_device: dict[str, _Conn] = {}
        self._stack: AsyncExitStack | None = None
        count = max(1, min(connections, len(groups)))
        devices: list[list[str]] = [[] for _ in range(count)]
        for i, group in enumerate(groups):
            devices[i % count].extend(group)
        token = f"{os.getpid()}-{random.randrange(16**4):04x}"
        address = target.address()
        self._conns: list[_Conn] = []
        for k, carried in enumerate(devices):
            will = None
            if announce and carried:
                will = Will(status_topic(prefix, carried[0]), OFFLINE, qos=1, retain=True)
            conn = _Conn(carried)
            conn.client = Client(address, f"{client_id_prefix}-{token}-{k}", protocol=Protocol.V311,
                                 keepalive=KEEPALIVE_S, max_inflight=window, will=will,
                                 on_connect=partial(self._connected, conn), on_state=partial(self._state, conn))
            self._conns.append(conn)
            for device_id in carried:
                self._by_device[device_id] = conn
                self.online[device_id] = True

    # -- connecting ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def connect(self) -> None:
        """Open every connection; raises BrokerError unless they all come up. `close`
        closes them (leaving `async with` does)."""
        if self._stack is not None:
            raise RuntimeError("the connection pool is already connected")
        stack = AsyncExitStack()
        results = await asyncio.gather(*(stack.enter_async_context(c.client) for c in self._conns),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await stack.aclose()
            why = failed[0]
            if isinstance(why, BrokerUnavailable):
                cause = why.__cause__ or why
                raise BrokerError(self.target.url(), f"cannot connect: {str(cause) or type(cause).__name__}") from None
            raise why
        self._stack = stack

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(offline=False, timeout_s=0.0 if exc is not None else 10.0)

    def _connected(self, conn: _Conn, session_present: bool) -> None:
        """After each CONNACK: `online` (or what the device is now) for every device of
        the connection, ahead of anything published from now on."""
        if self.announce:
            for device_id in conn.devices:
                payload = ONLINE if self.online.get(device_id, True) else OFFLINE
                self._publish(conn, status_topic(self.prefix, device_id), payload, True)
        conn.up.set()

    def _state(self, conn: _Conn, up: bool, why: str) -> None:
        if not up:
            conn.up.clear()

    # -- publishing ------------------------------------------------------------------------
    async def publish(self, device_id: str, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 on the device's connection; waits while its window is full or
        it is reconnecting (back-pressure, nothing is dropped)."""
        conn = self._by_device[device_id]
        if len(conn.unacked) >= self.window or not conn.up.is_set():
            await self._room(conn)
        self._publish(conn, topic, payload, retain)

    async def send(self, msg: SimMessage) -> None:
        """Publish a simulated message; status messages also set the device's state, so
        that a reconnect announces what the device really is."""
        if msg.channel == "status":
            self.online[msg.device_id] = msg.payload == ONLINE
        await self.publish(msg.device_id, msg.topic(self.prefix), msg.payload, msg.retain)

    def _publish(self, conn: _Conn, topic: str, payload: bytes, retain: bool) -> None:
        self.published += 1
        conn.unacked.append(conn.client.publish(topic, payload, qos=1, retain=retain))

    async def _room(self, conn: _Conn) -> None:
        """Wait until the connection is up and its window has room."""
        while True:
            self._count(conn)
            if not conn.up.is_set():
                await conn.up.wait()
            elif len(conn.unacked) >= self.window:
                await asyncio.wait((conn.unacked[0],))
            else:
                return

    def _count(self, conn: _Conn) -> None:
        """Move the acknowledged publishes at the front of the window to `acked`."""
        unacked = conn.unacked
        while unacked and unacked[0].done():
            done = unacked.popleft()
            if not done.cancelled() and done.exception() is None:
                self._acked += 1

    @property
    def acked(self) -> int:
        """Publishes the broker has acknowledged so far."""
        for conn in self._conns:
            self._count(conn)
        return self._acked

    def inflight(self) -> int:
        for conn in self._conns:
            self._count(conn)
        return sum(len(c.unacked) for c in self._conns)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every message is acknowledged; False if that took longer than `timeout_s`."""
        waiting = [f for c in self._conns for f in c.unacked]
        late: set[asyncio.Future[None]] = set()
        if waiting and timeout_s > 0:
            _, late = await asyncio.wait(waiting, timeout=timeout_s)
        return not self.inflight() and not late

    async def close(self, *, offline: bool, timeout_s: float = 10.0) -> None:
        """Disconnect every connection, after publishing `offline` for every device when
        asked to and waiting (up to `timeout_s`) for what is in flight."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            if offline and self.announce:
                for conn in self._conns:
                    for device_id in conn.devices:
                        self.online[device_id] = False
                        if conn.up.is_set():
                            self._publish(conn, status_topic(self.prefix, device_id), OFFLINE, True)
            await self.flush(timeout_s)
        finally:
            await stack.aclose()
            for conn in self._conns:
                conn.up.clear()

    @property
    def connection_count(self) -> int:
        return len(self._conns)


__all__ = ["ConnectionPool", "MqttTarget"]
