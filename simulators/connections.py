"""MQTT connections for many simulated devices, speaking DESIGN.md §3 exactly.

One MQTT connection per device is what real devices have, and far too many for a fleet
of thousands in one process. `ConnectionPool` opens a configurable number of paho-mqtt
2.x connections and spreads the devices over them, all devices of one resident on the same
connection (QoS 1 keeps order per connection, so a resident's `door.closed` never overtakes
the `door.opened` before it). What that changes, and how it is made up for:

- **status `online`**: published explicitly, retained, QoS 1, for every device of a
  connection each time that connection is (re)established, before any of its events.
- **Last Will `offline`**: a connection has one Will, so it is set for the *first* device
  of the connection only. When the simulator dies, that device goes offline at once and
  the others are caught by the heartbeat timeout (3 × `heartbeat_s`). On a clean stop the
  pool publishes `offline` for every device itself (`close(offline=True)`).
  With `connections` >= the number of devices every device has its own Will, as in life.

Everything runs in the caller's thread: paho's `loop_read` / `loop_write` / `loop_misc`
driven by one `select`, no background threads (about twice the publish rate of paho's
`loop_start` thread on a 2-core machine). Each socket gets TCP_NODELAY on open. In-flight
QoS 1 messages are bounded per connection (`window`): `publish` pumps the network until a
PUBACK frees a slot, so a slow broker slows the simulator down and nothing queues without
bound (paho's own `max_inflight_messages_set` is 0 on purpose, see `_configure`). A lost
connection is retried with jittered exponential backoff; paho re-sends what was not acked.
"""

from __future__ import annotations

import os
import random
import select
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.errors import BrokerError
from simulators.wire import OFFLINE, ONLINE, SimMessage
from trygg.contract import status_topic

KEEPALIVE_S: Final = 30
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0


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


def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nagle's algorithm costs ~40 ms stalls on small QoS 1 messages (DESIGN.md §9)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(slots=True)
class _Conn:
    index: int
    client: mqtt.Client
    devices: list[str]
    inflight: int = 0
    connected: bool = False
    refused: str | None = None
    backoff: float = BACKOFF_MIN_S
    retry_at: float = 0.0
    announce: deque[str] = field(default_factory=deque)


class ConnectionPool:
    """`connections` MQTT clients carrying the devices of `groups` (one group per resident)."""

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
        self.acked = 0
        count = max(1, min(connections, len(groups)))
        token = f"{os.getpid()}-{random.randrange(16**4):04x}"
        self._conns: list[_Conn] = []
        self._by_device: dict[str, _Conn] = {}
        self.online: dict[str, bool] = {}
        for k in range(count):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id_prefix}-{token}-{k}",
                                 clean_session=True, protocol=mqtt.MQTTv311)
            self._conns.append(_Conn(k, client, []))
        for i, group in enumerate(groups):
            conn = self._conns[i % count]
            for device_id in group:
                conn.devices.append(device_id)
                self._by_device[device_id] = conn
                self.online[device_id] = True
        for conn in self._conns:
            self._configure(conn)

    def _configure(self, conn: _Conn) -> None:
        client = conn.client
        client.on_socket_open = _nodelay
        # The window is enforced here (`_Conn.inflight`), not by paho: paho's own limit scans
        # every in-flight message on each PUBACK (O(window) per ack, ~12 % of the publish
        # rate at window 100), and past it paho queues without bound instead of blocking.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.announce and conn.devices:
            client.will_set(status_topic(self.prefix, conn.devices[0]), OFFLINE, qos=1, retain=True)

        def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode,
                       props: Properties | None) -> None:
            if rc.is_failure:
                conn.refused = str(rc)
                return
            conn.connected, conn.refused, conn.backoff = True, None, BACKOFF_MIN_S
            if self.announce:
                conn.announce = deque(conn.devices)

        def on_disconnect(c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode,
                          props: Properties | None) -> None:
            conn.connected = False
            conn.retry_at = time.monotonic() + conn.backoff * random.uniform(0.5, 1.0)
            conn.backoff = min(conn.backoff * 2, BACKOFF_MAX_S)

        def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, props: Properties) -> None:
            conn.inflight -= 1
            self.acked += 1

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish

    # -- connecting ------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Open every connection; raises BrokerError if they are not all up in `timeout`."""
        for conn in self._conns:
            try:
                conn.client.connect(self.target.host, self.target.port, KEEPALIVE_S)
            except OSError as exc:
                self.close(offline=False)
                raise BrokerError(self.target.url(), f"cannot connect: {exc}") from None
        deadline = time.monotonic() + timeout
        while not all(c.connected for c in self._conns):
            refused = [c.refused for c in self._conns if c.refused]
            if refused or time.monotonic() > deadline:
                self.close(offline=False)
                why = f"refused: {refused[0]}" if refused else f"no CONNACK within {timeout} s"
                raise BrokerError(self.target.url(), why)
            self.pump(0.05)

    def _retry(self, conn: _Conn) -> None:
        try:
            conn.client.reconnect()
        except OSError:
            conn.retry_at = time.monotonic() + conn.backoff * random.uniform(0.5, 1.0)
            conn.backoff = min(conn.backoff * 2, BACKOFF_MAX_S)

    # -- the network loop ------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> None:
        """Read acknowledgements, write pending data, keep alive and reconnect; waits up to
        `timeout` seconds for the network."""
        readers: dict[Any, _Conn] = {}
        writers: list[Any] = []
        for conn in self._conns:
            sock = conn.client.socket()
            if sock is None:
                if not conn.connected and time.monotonic() >= conn.retry_at:
                    self._retry(conn)
                continue
            readers[sock] = conn
            if conn.client.want_write():
                writers.append(sock)
        if not readers:
            time.sleep(min(timeout, 0.05))
            return
        try:
            readable, writable, _ = select.select(list(readers), writers, [], timeout)
        except (OSError, ValueError):  # a socket closed under us; the next pump retries
            return
        for sock in readable:
            readers[sock].client.loop_read(100)
        for sock in writable:
            writer = readers[sock]
            if writer.client.socket() is sock:
                writer.client.loop_write()
        for conn in self._conns:
            if conn.client.socket() is not None:
                conn.client.loop_misc()
            self._drain_announcements(conn)

    def _drain_announcements(self, conn: _Conn) -> None:
        while conn.announce and conn.connected and conn.inflight < self.window:
            device_id = conn.announce.popleft()
            payload = ONLINE if self.online.get(device_id, True) else OFFLINE
            self._raw_publish(conn, status_topic(self.prefix, device_id), payload, True)

    def _raw_publish(self, conn: _Conn, topic: str, payload: bytes, retain: bool) -> None:
        conn.inflight += 1
        self.published += 1
        info = conn.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            conn.inflight -= 1
            self.published -= 1
            raise BrokerError(self.target.url(), f"publish failed: {mqtt.error_string(info.rc)}")

    # -- publishing ------------------------------------------------------------------------
    def publish(self, device_id: str, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 on the device's connection; waits while its window is full or
        it is reconnecting (back-pressure, nothing is dropped)."""
        conn = self._by_device[device_id]
        while not conn.connected or conn.announce or conn.inflight >= self.window:
            self.pump(0.01 if conn.connected else 0.05)
        self._raw_publish(conn, topic, payload, retain)

    def send(self, msg: SimMessage) -> None:
        """Publish a simulated message; status messages also set the device's state, so
        that a reconnect announces what the device really is."""
        if msg.channel == "status":
            self.online[msg.device_id] = msg.payload == ONLINE
        self.publish(msg.device_id, msg.topic(self.prefix), msg.payload, msg.retain)

    def inflight(self) -> int:
        return sum(c.inflight for c in self._conns)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every message is acknowledged; False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        while self.inflight() > 0 or any(c.announce for c in self._conns if c.connected):
            if time.monotonic() > deadline:
                return False
            self.pump(0.02)
        return True

    def close(self, *, offline: bool, timeout: float = 10.0) -> None:
        """Disconnect every connection, after publishing `offline` for every device when
        asked to and waiting for what is in flight."""
        if offline and self.announce:
            for conn in self._conns:
                conn.announce.clear()
                for device_id in conn.devices:
                    self.online[device_id] = False
                    if conn.connected:
                        self._raw_publish_bounded(conn, device_id)
        if any(c.connected for c in self._conns):
            self.flush(timeout)
        for conn in self._conns:
            if conn.client.socket() is not None:
                conn.client.disconnect()
                conn.client.loop_write()
            conn.connected = False

    def _raw_publish_bounded(self, conn: _Conn, device_id: str) -> None:
        deadline = time.monotonic() + 5.0
        while conn.inflight >= self.window and conn.connected and time.monotonic() < deadline:
            self.pump(0.01)
        self._raw_publish(conn, status_topic(self.prefix, device_id), OFFLINE, True)

    @property
    def connection_count(self) -> int:
        return len(self._conns)


__all__ = ["ConnectionPool", "MqttTarget"]
