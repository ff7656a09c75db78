"""MQTT ingress: subscribe, parse, validate against the contract, hand on, make durable.

paho-mqtt runs the network loop in its own thread with manual acknowledgement: a
message is acknowledged (PUBACK) by the durability loop only after it is committed to
PostgreSQL or fsync'ed to the spool. The session is persistent (MQTT 5 session expiry,
or clean session false on 3.1.1) under a stable client id, so events published while
Trygg is down wait in the broker.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import metrics
from gateway.durable import DurableWriter, Pending
from gateway.errors import BrokerUnavailable
from gateway.spool import Record, Spool
from storage import DeadLetter, EventStore, StatusRow
from trygg.contract import (
    SOURCE_KINDS,
    DeviceKind,
    Event,
    InvalidMessage,
    Reason,
    parse_event,
    parse_status,
    parse_topic,
    utcnow,
)
from trygg.logging import get_logger
from trygg.pipeline import DeviceStatus, EventSink, discard
from trygg.registry import Registry

log = get_logger("trygg.gateway")

SESSION_EXPIRY_S = 7 * 24 * 3600
RECENT_KEYS = 200_000


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


def set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nagle's algorithm costs ~40 ms stalls on small messages (DESIGN.md §9)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def device_index(registry: Registry) -> dict[str, tuple[str, DeviceKind]]:
    return {d.id: (r.id, d.device_kind) for r in registry.residents for d in r.devices}


class Gateway:
    """One MQTT ingress. `start()` connects and runs; `stop()` drains and disconnects."""

    def __init__(
        self,
        broker: BrokerAddress,
        store: EventStore,
        spool: Spool,
        registry: Registry,
        *,
        prefix: str = "trygg/v1",
        client_id: str = "trygg",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        receive_maximum: int = 10_000,
        sink: EventSink = discard,
        batch_max: int = 2000,
        batch_wait_s: float = 0.005,
        queue_max: int = 20_000,
        retry_s: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._broker = broker
        self._prefix = prefix
        self._protocol = protocol
        self._receive_maximum = receive_maximum
        self._sink = sink
        self._clock = clock
        self._devices = device_index(registry)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._generation = 0
        self.connected = threading.Event()
        self.writer = DurableWriter(
            store, spool, self._ack, batch_max=batch_max, batch_wait_s=batch_wait_s,
            queue_max=queue_max, retry_s=retry_s,
        )
        self._received_events = metrics.RECEIVED.labels("events")
        self._received_status = metrics.RECEIVED.labels("status")

        if protocol == mqtt.MQTTv5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=protocol, manual_ack=True)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=protocol, clean_session=False, manual_ack=True)
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        client.on_socket_open = set_nodelay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(1, 30)
        self._client = client

    # -- registry ---------------------------------------------------------------------

    def set_registry(self, registry: Registry) -> None:
        """Swap in a reloaded registry (one assignment: safe against the MQTT thread)."""
        self._devices = device_index(registry)

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self.writer.start()
        props = None
        if self._protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = self._receive_maximum
        try:
            if self._protocol == mqtt.MQTTv5:
                self._client.connect(self._broker.host, self._broker.port, keepalive=30,
                                     clean_start=False, properties=props)
            else:
                self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        except OSError as exc:
            self.writer.stop()
            raise BrokerUnavailable(str(self._broker), str(exc)) from exc
        self._client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise BrokerUnavailable(str(self._broker), "no CONNACK within {timeout} s")

    def stop(self) -> None:
        """Make what was received durable and acknowledge it, then disconnect."""
        self.writer.idle.wait(10)
        self._client.disconnect()
        self._client.loop_stop()
        self.writer.stop()

    def kill(self) -> None:
        """Drop the connection without draining (tests of crash behaviour)."""
        self._client.loop_stop()
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.close()

    # -- paho callbacks (network thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused connection", broker=str(self._broker), reason=str(reason))
            return
        self._generation += 1
        client.subscribe([(f"{self._prefix}/devices/+/events", 1),
                          (f"{self._prefix}/devices/+/status", 1)])
        log.info("connected to broker", broker=str(self._broker),
                 session_present=bool(getattr(flags, "session_present", False)))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("broker refused the subscription", reasons=[str(r) for r in reasons])
            return
        metrics.BROKER_UP.set(1)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        metrics.BROKER_UP.set(0)
        self.connected.clear()
        log.warning("disconnected from broker", broker=str(self._broker), reason=str(reason))

    def _ack(self, item: Pending) -> None:
        if item.qos and item.generation == self._generation:
            self._client.ack(item.mid, item.qos)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received_at = self._clock()
        record: Record
        try:
            record = self._accept(msg.topic, bytes(msg.payload), received_at)
        except InvalidMessage as exc:
            record = DeadLetter(received_at, msg.topic, bytes(msg.payload), exc.reason.value,
                                exc.detail)
            metrics.DEAD_LETTERS.labels(exc.reason.value).inc()
        except UnicodeDecodeError:
            record = DeadLetter(received_at, repr(msg._topic), bytes(msg.payload),
                                Reason.BAD_TOPIC.value, "topic is not UTF-8")
            metrics.DEAD_LETTERS.labels(Reason.BAD_TOPIC.value).inc()
        self.writer.put(Pending(record, msg.mid, msg.qos, self._generation))

    def _accept(self, topic: str, payload: bytes, received_at: datetime) -> Record:
        where = parse_topic(topic, self._prefix)
        entry = self._devices.get(where.device_id)
        if where.channel == "status":
            self._received_status.inc()
            online = parse_status(payload)
            if entry is None:
                raise InvalidMessage(Reason.UNKNOWN_DEVICE,
                                     f"device {where.device_id!r} is not in the registry")
            self._hand_on(DeviceStatus(where.device_id, entry[0], online, received_at))
            return StatusRow(where.device_id, online, received_at)
        self._received_events.inc()
        event = parse_event(where.device_id, payload, received_at)
        if entry is None:
            raise InvalidMessage(Reason.UNKNOWN_DEVICE,
                                 f"device {where.device_id!r} is not in the registry")
        resident_id, kind = entry
        if kind not in SOURCE_KINDS[event.type]:
            raise InvalidMessage(Reason.WRONG_KIND,
                                 f"a {kind.value} device cannot send {event.type.value}")
        event.resident_id = resident_id
        key = (event.device_id, event.event_id)
        if key in self._recent:
            return event  # re-sent: stored once by the store's key, not handed on again
        self._recent[key] = None
        if len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)
        self._hand_on(event)
        return event

    def _hand_on(self, item: Event | DeviceStatus) -> None:
        try:
            self._sink(item)
        except Exception:
            # The event is still made durable; the rules see it again after a restart.
            log.exception("processor hand-off failed", device_id=item.device_id)
