"""Alert delivery over MQTT with paho-mqtt 2.x (DESIGN.md §3, §9).

Each alert is published, QoS 1 and retained, on
``{prefix}/teams/{team_id}/alerts/{alert_id}`` for every team it reached (the
resident's team, then each escalation team). A resolved or cancelled alert is published
once more with its final state, *not* retained, and then an empty retained message
clears the topic: a handheld that is connected sees the final state (followed by an
empty message, which means "gone"), one that connects later sees nothing for it.

paho runs its network loop on its own thread (`loop_start`); `publish` only queues the
packet and wakes that thread, so it never blocks the caller. While the broker is away,
QoS 1 messages wait in paho's unbounded queue and go out, in order, when it is back;
paho reconnects by itself with a growing delay. TCP_NODELAY is set on the socket
(Nagle costs ~40 ms stalls). After every (re)connect `on_connect` is called (on paho's
thread) so the stage can republish its unresolved alerts — the broker may have lost
its retained messages while it was down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts import metrics
from alerts.model import Change
from gateway import set_nodelay
from trygg.contract import alert_topic, dumps
from trygg.logging import get_logger

log = get_logger("trygg.alerts")

MAX_INFLIGHT: Final = 65_535
KEEPALIVE_S: Final = 30


class AlertPublisher:
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
    ) -> None:
        self._host, self._port = host, port
        self._prefix = prefix
        self._on_connect_cb = on_connect
        self.connected = threading.Event()
        #: counts successful connections (1 after the first)
        self.connections = 0
        if protocol == MQTTProtocolVersion.MQTTv5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                 clean_session=True)
        client.on_socket_open = set_nodelay
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # unbounded: an alert is never dropped by paho
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._started = False

    @property
    def address(self) -> str:
        return f"mqtt://{self._host}:{self._port}"

    def start(self) -> None:
        """Start connecting in the background; publishing may begin at once (queued)."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self._host, self._port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    def topic(self, team_id: str, alert_id: str) -> str:
        return alert_topic(self._prefix, team_id, alert_id)

    def publish(self, change: Change) -> int:
        """Queue the change for every team the alert reached; returns messages queued."""
        payload = dumps(change.wire)
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
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued until connected
            metrics.DELIVERIES_FAILED.labels("mqtt").inc()
            log.error("alert publish refused by the MQTT client", topic=topic, rc=mqtt.error_string(info.rc))

    def pending(self) -> int:
        """QoS 1 messages not yet acknowledged by the broker."""
        return len(self._client._out_messages)

    def flush(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything queued (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            if not self.connected.is_set():
                return False
            time.sleep(0.01)
        return not self.pending()

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued if the broker is there, then disconnect."""
        if not self._started:
            return
        self.flush(timeout)
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        metrics.BROKER_UP.set(0)

    # ---------------------------------------------------------------- paho thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("alert publisher refused by the broker", broker=self.address, reason=str(reason))
            return
        self.connections += 1
        self.connected.set()
        metrics.BROKER_UP.set(1)
        log.info("alert publisher connected", broker=self.address, connections=self.connections)
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb()
            except Exception:
                log.exception("alert publisher on_connect callback failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        metrics.BROKER_UP.set(0)
        if was and self._started:
            log.warning("alert publisher lost the broker, reconnecting", broker=self.address, reason=str(reason))


__all__ = ["AlertPublisher"]
