"""The simulators over a real Mosquitto: what they publish is what arrives, in contract form."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators import (
    ConnectionPool,
    Fleet,
    MqttTarget,
    default_start,
    load_scenario,
    run_fleet,
    run_load,
    run_scenario,
)
from simulators.wire import from_ms
from tests.fix_mqtt import MosquittoInstance
from trygg.contract import parse_event, parse_topic

pytestmark = pytest.mark.integration


class Subscriber:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        target = MqttTarget.parse(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        self.client.subscribe(f"{prefix}/devices/+/+", qos=1)
        assert self._subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mosquitto: MosquittoInstance, prefix: str) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto.url, prefix)
    yield sub
    sub.close()


def test_a_fleet_publishes_events_and_statuses_as_the_contract_says(
    mosquitto: MosquittoInstance, prefix: str, subscriber: Subscriber,
) -> None:
    speed, duration = 2000.0, 3.0
    start = default_start(datetime.now(UTC), speed, duration)
    fleet = Fleet(21, 4, start)
    devices = fleet.registry().device_index()
    stats = run_fleet(fleet, MqttTarget.parse(mosquitto.url), prefix,
                      speed=speed, duration_s=duration, connections=2)
    announced = 2 * len(devices)  # `online` on connect, `offline` at the end
    got = subscriber.wait_for(stats.sent + announced)
    assert stats.acked == stats.published == stats.sent + announced
    assert len(got) == stats.sent + announced

    until = from_ms(fleet.start_ms + int(speed * duration * 1000) + 60_000)
    expected = {(m.topic(prefix), m.payload) for m in fleet.messages(until=until)}
    first_status: dict[str, bytes] = {}
    last_status: dict[str, bytes] = {}
    for topic, payload, _retain in got:
        parsed = parse_topic(topic, prefix)
        assert parsed.device_id in devices
        if parsed.channel == "status":
            first_status.setdefault(parsed.device_id, payload)
            last_status[parsed.device_id] = payload
            continue
        assert parsed.device_id in first_status, "online is announced before any event"
        parse_event(parsed.device_id, payload, datetime.now(UTC))  # ts acceptable now
        assert (topic, payload) in expected
    assert set(first_status.values()) == {b"online"}
    assert set(last_status) == set(devices) and set(last_status.values()) == {b"offline"}


def test_status_is_retained_with_the_last_will_for_a_connections_first_device(
    mosquitto: MosquittoInstance, prefix: str,
) -> None:
    target = MqttTarget.parse(mosquitto.url)

    async def run() -> None:
        async with ConnectionPool(target, [["d-a1", "d-a2"], ["d-b1"]], prefix, connections=2) as pool:
            assert await pool.flush()
            protocol = pool._conns[0].client._protocol
            assert protocol is not None and protocol.transport is not None
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            late = Subscriber(mosquitto.url, prefix)
            try:
                retained = await asyncio.to_thread(late.wait_for, 3)
                assert sorted((t.rsplit("/", 2)[1], p, r) for t, p, r in retained) == [
                    ("d-a1", b"online", True), ("d-a2", b"online", True), ("d-b1", b"online", True)]
                # The simulator dies: the broker publishes each connection's Will.
                for conn in pool._conns:
                    await conn.client.abort()
                wills = await asyncio.to_thread(late.wait_for, 5, KEEPALIVE_WAIT)
                assert {(t.rsplit("/", 2)[1], p) for t, p, _ in wills[3:]} == {
                    ("d-a1", b"offline"), ("d-b1", b"offline")}
            finally:
                late.close()

    asyncio.run(run())


KEEPALIVE_WAIT = 10.0


def test_after_a_broker_restart_the_pool_reconnects_announces_again_and_loses_nothing(prefix: str) -> None:
    broker = MosquittoInstance()  # a broker of its own: it restarts without its retained messages
    broker.start()
    target = MqttTarget.parse(broker.url)

    async def run() -> None:
        async with ConnectionPool(target, [["d-a1"], ["d-b1"]], prefix, connections=2) as pool:
            assert await pool.flush()
            await asyncio.to_thread(broker.halt)
            # Published while the broker is away: it waits, then goes once the pool is back.
            event = asyncio.create_task(pool.publish("d-a1", f"{prefix}/devices/d-a1/events", b"{}", retain=True))
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(event, 30)
            late = Subscriber(broker.url, prefix)
            try:  # each connection comes back after a backoff of its own
                got = await asyncio.to_thread(late.wait_for, 3, 30)
                assert sorted((t.rsplit("/", 2)[1:], p) for t, p, _ in got) == [
                    (["d-a1", "events"], b"{}"), (["d-a1", "status"], b"online"), (["d-b1", "status"], b"online")]
            finally:
                late.close()
            assert await pool.flush()
            assert pool.acked == pool.published == 2 + 2 + 1

    try:
        asyncio.run(run())
    finally:
        broker.stop()


def test_load_mode_publishes_every_event_acknowledged(
    mosquitto: MosquittoInstance, prefix: str, subscriber: Subscriber,
) -> None:
    stats = run_load(MqttTarget.parse(mosquitto.url), prefix, count=3000, residents=50)
    got = subscriber.wait_for(3000)
    assert stats.acked == 3000 and len(got) == 3000
    for topic, payload, _ in got[:200]:
        parse_event(parse_topic(topic, prefix).device_id, payload, datetime.now(UTC))


def test_a_scenario_is_published_exactly_as_its_steps(
    mosquitto: MosquittoInstance, prefix: str, subscriber: Subscriber,
) -> None:
    sc = load_scenario("button_repeated")
    t0 = sc.latest_start(datetime.now(UTC))
    run_scenario(sc, MqttTarget.parse(mosquitto.url), prefix, speed=600, t0=t0, run="it")
    expected = [(m.topic(prefix), m.payload) for m in sc.messages(t0, run="it")]
    got = subscriber.wait_for(len(expected) + 1)
    events = [(t, p) for t, p, _ in got if t.endswith("/events")]
    assert events == expected
