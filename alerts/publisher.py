"""Alert delivery over MQTT (DESIGN.md §3, §9).

Each alert is published, QoS 1 and retained, on
``{prefix}/teams/{team_id}/alerts/{alert_id}`` for every team it reached (the
resident's team, then each escalation team). A resolved or cancelled alert is published
once more with its final state, *not* retained, and then an empty retained message
clears the topic: a handheld that is connected sees the final state (followed by an
empty message, which means "gone"), one that connects later sees nothing for it.

The publisher is a `gateway.Connection` on the alert stage's event loop: `publish`
writes the packet to the socket before it returns (no other thread to wake, which is
what paho's network thread cost every alarm). A QoS 1 message is kept until the broker
acknowledges it; while the broker is away messages wait, in order, and go out when it
is back (reconnect with a growing, jittered delay). TCP_NODELAY is set on the socket
(Nagle costs ~40 ms stalls). With `tls` it connects over TLS (mqtt/connection.py);
it logs in as an account of its own (`trygg-alerts`: gateway.BrokerAddress). After
every (re)connect the messages not yet acknowledged are sent again, then `on_connect` is
called (on the loop) so the stage can republish its unresolved alerts — the broker may
have lost its retained messages while it was down.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

from paho.mqtt.enums import MQTTProtocolVersion

from alerts import metrics
from alerts.model import Change
from mqtt import Connection
from mqtt.wire import MQTT5, MQTT311, PUBACK, Message, publish_packet
from trygg.contract import alert_topic
from trygg.logging import get_logger

log = get_logger("trygg.alerts")

#: packet ids in flight at most (the MQTT limit); more wait in order
MAX_INFLIGHT: Final = 65_535
KEEPALIVE_S: Final = 30


class AlertPublisher(Connection):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "trygg/v1",
        client_id: str = "trygg-alerts",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        username: str | None = None,
        password: str | None = None,
        on_connect: Callable[[], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, client_id, username=username, password=password, keepalive=KEEPALIVE_S,
                         version=MQTT5 if protocol == MQTTProtocolVersion.MQTTv5 else MQTT311, clean=True,
                         on_state=self._state, tls=tls)
        self._prefix = prefix
        self._on_connect_cb = on_connect
        #: counts successful connections (1 after the first)
        self.connections = 0
        self._inflight: OrderedDict[int, tuple[str, bytes, bool]] = OrderedDict()
        self._waiting: deque[tuple[str, bytes, bool]] = deque()  # when every packet id is in use
        self._next_mid = 0
        self._started = False

    @property
    def address(self) -> str:
        return self.url

    def start(self) -> None:
        """Start connecting (on the running loop); publishing may begin at once (kept)."""
        if self._started:
            return
        self._started = True
        task = asyncio.get_running_loop().create_task(self.open(wait=False))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # keeps it from being logged as lost

    def topic(self, team_id: str, alert_id: str) -> str:
        return alert_topic(self._prefix, team_id, alert_id)

    def publish(self, change: Change) -> int:
        """Send the change to every team the alert reached; returns messages sent."""
        payload = change.alert.wire_payload()
        alert_id = change.alert.alert_id
        sent = 0
        for team in change.teams:
            topic = self.topic(team, alert_id)
            if change.final:
                self._send(topic, payload, retain=False)
                self._send(topic, b"", retain=True)  # clear the retained copy
                sent += 2
            else:
                self._send(topic, payload, retain=True)
                sent += 1
        return sent

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if len(self._inflight) >= MAX_INFLIGHT:
            self._waiting.append((topic, payload, retain))
            return
        mid = self._new_mid()
        self._inflight[mid] = (topic, payload, retain)
        self.write(publish_packet(topic, payload, mid, self.version, retain=retain))  # else: on connect

    def _new_mid(self) -> int:
        while True:
            self._next_mid = self._next_mid % 65_535 + 1
            if self._next_mid not in self._inflight:
                return self._next_mid

    def pending(self) -> int:
        """QoS 1 messages not yet acknowledged by the broker."""
        return len(self._inflight) + len(self._waiting)

    def flush(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything sent (or `timeout`); not on
        the loop's thread."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            if not self.connected.is_set():
                return False
            time.sleep(0.01)
        return not self.pending()

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is waiting if the broker is there, then disconnect; not on the
        loop's thread."""
        if not self._started:
            return
        self.flush(timeout)
        self._started = False
        loop = self.loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout)
        metrics.BROKER_UP.set(0)

    # ---------------------------------------------------------------- loop thread

    def _connected(self) -> None:
        self.connections += 1
        metrics.BROKER_UP.set(1)
        log.info("alert publisher connected", broker=self.address, connections=self.connections)
        for mid, (topic, payload, retain) in self._inflight.items():  # in order, as first sent
            self.write(publish_packet(topic, payload, mid, self.version, retain=retain))
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb()
            except Exception:
                log.exception("alert publisher on_connect callback failed")

    def _packets(self, messages: list[Message], others: list[tuple[int, bytes]], generation: int) -> None:
        for first, body in others:
            if first >> 4 == PUBACK and len(body) >= 2:
                self._inflight.pop((body[0] << 8) | body[1], None)
        while self._waiting and len(self._inflight) < MAX_INFLIGHT:
            topic, payload, retain = self._waiting.popleft()
            self._send(topic, payload, retain=retain)

    def _disconnected(self, why: str) -> None:
        log.warning("alert publisher lost the broker, reconnecting", broker=self.address, reason=why)

    def _state(self, up: bool, why: str) -> None:
        if not up:
            metrics.BROKER_UP.set(0)


__all__ = ["AlertPublisher"]
