"""The owners of the device partitions (composition/cluster_ingest.py) on a real
three-node NATS cluster and a real PostgreSQL: devices publish QoS 1 over MQTT to the
nodes, every event is stored once and handed on once to its resident's partition, bad
messages become dead letters, alarms go on while PostgreSQL is down, and a partition that
changes owner loses nothing and stores nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import nats
import psycopg
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError

from cluster import DEVICE_PARTITIONS, RESIDENTS_STREAM, Layout, ensure_layout, ingest_consumer
from cluster.layout import MQTT_STREAM, resident_partition, resident_subject, settled
from composition.cluster_ingest import IngestPartition
from composition.runtime import open_pool
from gateway import DeadLetters, Validator
from mqtt import BrokerAddress
from storage import EventStore, Pool
from tests.fix_cluster import NatsCluster
from tests.fix_db import PostgresInstance
from tests.fix_mqtt import Publisher
from tests.helpers import event
from trygg.contract import Event, rekeyed_id
from trygg.pipeline import DeviceStatus, item_from_wire
from trygg.registry import Registry, validate_registry

pytestmark = [pytest.mark.integration]

T = TypeVar("T")
#: a message on TRYGG_RESIDENTS: subject, message id, the event or status
Handed = tuple[str, str | None, Event | DeviceStatus]

PREFIX = "trygg/v1"  # the prefix the nodes' mapping is made for (tests/fix_cluster.py)


def world(tag: str, residents: int) -> Registry:
    """Residents r-{tag}-{i}, each with an alarm unit `{tag}-{i}-alarm` and a motion
    sensor `{tag}.{i}.motion` (an id with dots)."""
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [{"id": f"r-{tag}-{i}", "name": f"Beboer {i}", "team": "east", "devices": [
            {"id": f"{tag}-{i}-alarm", "kind": "alarm_unit"}, {"id": f"{tag}.{i}.motion", "kind": "motion_sensor"}]}
            for i in range(residents)],
    })


def topic(device: str, channel: str = "events") -> str:
    return f"{PREFIX}/devices/{device}/{channel}"


def publish(cluster: NatsCluster, messages: Iterable[tuple[str, bytes]]) -> None:
    """QoS 1 over MQTT, the devices spread over the nodes (one connection per node, so
    each device's messages go in order), waiting for every PUBACK."""
    publishers = [Publisher(BrokerAddress(host, port)) for host, port in cluster.mqtt]
    try:
        sent = [publishers[zlib.crc32(t.split("/")[3].encode()) % len(publishers)].publish(t, p)
                for t, p in messages]
        for info in sent:
            info.wait_for_publish(30)
    finally:
        for pub in publishers:
            pub.close()


class Owners:
    """One `IngestPartition` for every device partition, on one validator, each with a
    store of its own (as the composition root makes them)."""

    def __init__(self, js: JetStreamContext, registry: Registry, pool: Pool) -> None:
        self.js, self.pool = js, pool
        self.validator = Validator(registry, PREFIX)
        self.partitions: list[IngestPartition] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for p in range(DEVICE_PARTITIONS):
            part = IngestPartition(self.js, p, validator=self.validator, dead_letters=DeadLetters(PREFIX),
                                   store=EventStore(self.pool), prefix=PREFIX, batch=200)
            self.partitions.append(part)
            self.tasks.append(asyncio.create_task(part.run(), name=f"ingest {p}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results

    def total(self, what: str) -> int:
        return sum(getattr(p, what) for p in self.partitions)


@contextlib.asynccontextmanager
async def owners(cluster: NatsCluster, registry: Registry, url: str) -> AsyncIterator[tuple[JetStreamContext, Owners]]:
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await settled("layout", lambda: ensure_layout(js, Layout(), cluster.mqtt[0]), within_s=30)
    pool = open_pool(url, DEVICE_PARTITIONS + 1)
    running = Owners(js, registry, pool)
    try:
        yield js, running
    finally:
        if running.tasks:
            await running.stop()
        pool.close()
        await nc.close()


async def stream_end(js: JetStreamContext) -> int:
    return (await js.stream_info(RESIDENTS_STREAM)).state.last_seq


async def handed_on(js: JetStreamContext, after: int) -> list[Handed]:
    """(subject, message id, item) of every message on TRYGG_RESIDENTS after seq `after`."""
    end = await stream_end(js)
    if end <= after:
        return []
    sub = await settled("reader", lambda: js.pull_subscribe(  # a fresh cluster's streams may still elect leaders
        "trygg.res.*", stream=RESIDENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
                              ack_policy=AckPolicy.NONE, inactive_threshold=5.0)), within_s=30)
    out: list[Handed] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    try:
        while len(out) < end - after:
            try:
                msgs = await sub.fetch(1000, timeout=2)
            except ServiceUnavailableError:  # the new reader's leader is still being elected
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                out.append((msg.subject, (msg.headers or {}).get("Nats-Msg-Id"), item_from_wire(msg.data)))
    finally:
        await sub.unsubscribe()
    return out


async def waiting(js: JetStreamContext) -> int:
    """Messages of the device partitions not yet acknowledged (delivered or not)."""
    total = 0
    for p in range(DEVICE_PARTITIONS):
        info = await js.consumer_info(MQTT_STREAM, ingest_consumer(p))
        total += info.num_pending + info.num_ack_pending
    return total


def rows(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode(), args).fetchall()


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 20.0) -> T:
    """Await `probe()` until `done(value)`, for at most `within` seconds; the last value
    (the assert is the caller's)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


def keys_in_order(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(device, event id) pairs → each device's event ids in the order given."""
    out: dict[str, list[str]] = {}
    for device, event_id in items:
        out.setdefault(device, []).append(event_id)
    return out


def sent_keys(messages: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(device, event id) of published events, in the order published."""
    return [(t.split("/")[3], json.loads(p)["id"]) for t, p in messages]


def stored_in_order(url: str) -> list[tuple[str, str]]:
    return [(str(d), str(e)) for d, e in rows(url, "SELECT device_id, event_id FROM trygg.events ORDER BY seq")]


async def count(url: str, table: str = "trygg.events") -> int:
    return int(str((await asyncio.to_thread(rows, url, f"SELECT count(*) FROM {table}"))[0][0]))


def check_handed_on(items: list[Handed], expected: dict[str, list[str]]) -> None:
    """Every expected event handed on once, in order per device, to its resident's
    partition, under the message id the stream de-duplicates by."""
    events = [(subject, msg_id, item) for subject, msg_id, item in items if isinstance(item, Event)]
    for subject, msg_id, item in events:
        assert subject == resident_subject(resident_partition(item.resident_id))
        assert msg_id == f"{item.device_id}/{item.event_id}"
    keys = [(item.device_id, item.event_id) for _, _, item in events if item.device_id in expected]
    assert len(keys) == len(set(keys))
    assert keys_in_order(keys) == expected


def test_events_of_many_devices_are_stored_once_and_handed_on_once_in_order(
        nats_cluster: NatsCluster, database: str) -> None:
    asyncio.run(many_devices(nats_cluster, database))


async def many_devices(cluster: NatsCluster, url: str) -> None:
    tag = f"m{uuid.uuid4().hex[:6]}"
    residents, per_device = 100, 5
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    messages: list[tuple[str, bytes]] = []
    for k in range(per_device):
        for i in range(residents):
            for device, kind in ((f"{tag}-{i}-alarm", "alarm.button"), (f"{tag}.{i}.motion", "motion")):
                messages.append((topic(device), event(f"e-{k}", kind, ts=t0 + timedelta(seconds=k))))
    # the first alarm unit sends e-0 again (a re-send: the same type and ts), then uses
    # the id e-1 for a new press (its counter reset): another event, under its re-keyed id
    first = f"{tag}-0-alarm"
    pressed = t0 + timedelta(seconds=30)
    messages += [(topic(first), event("e-0", "alarm.button", ts=t0)),
                 (topic(first), event("e-1", "alarm.button", ts=pressed))]
    expected = keys_in_order(sent_keys(messages[:-2]))
    expected[first].append(rekeyed_id("e-1", "alarm.button", pressed))
    total = residents * 2 * per_device + 1

    async with owners(cluster, world(tag, residents), url) as (js, running):
        start = await stream_end(js)
        running.start()
        await asyncio.to_thread(publish, cluster, messages)
        assert await eventually(lambda: count(url), lambda n: n >= total) == total
        assert await eventually(lambda: waiting(js), lambda n: n == 0) == 0
        items = await handed_on(js, start)
        assert running.total("stored") == total
        assert running.total("forwarded") == total
        assert running.total("dead") == 0

    assert keys_in_order(stored_in_order(url)) == expected
    assert len(items) == total
    check_handed_on(items, expected)


def test_bad_messages_become_dead_letters_with_their_reason_and_the_partition_goes_on(
        nats_cluster: NatsCluster, database: str) -> None:
    asyncio.run(bad_messages(nats_cluster, database))


async def bad_messages(cluster: NatsCluster, url: str) -> None:
    tag = f"b{uuid.uuid4().hex[:6]}"
    alarm, motion = f"{tag}-0-alarm", f"{tag}.0.motion"
    ts = datetime.now(UTC).isoformat()
    bad = [
        (topic(alarm), b"not json {", "bad_json"),
        (topic(alarm), json.dumps({"id": 5, "ts": ts, "type": "alarm.button"}).encode(), "bad_field"),
        (topic(f"{tag}-nobody"), event("e-9", "motion"), "unknown_device"),
        (topic(alarm), b'{"id": "e-8", "pad": "' + b"x" * 20_000 + b'"}', "too_large"),
        (topic(alarm), bytes(range(256)), "not_utf8"),
        (topic(motion), event("e-7", "alarm.button"), "wrong_kind"),
        (topic(alarm, "status"), b"sideways", "bad_status"),
    ]
    messages = [(topic(alarm), event("e-1", "alarm.button")), *((t, p) for t, p, _ in bad),
                (topic(motion), event("e-2", "motion")), (topic(alarm, "status"), b"online")]

    async with owners(cluster, world(tag, 1), url) as (js, running):
        start = await stream_end(js)
        running.start()
        await asyncio.to_thread(publish, cluster, messages)
        assert await eventually(lambda: count(url, "trygg.dead_letters"), lambda n: n >= len(bad)) == len(bad)
        assert await eventually(lambda: count(url), lambda n: n >= 2) == 2
        assert await eventually(lambda: waiting(js), lambda n: n == 0) == 0
        items = await handed_on(js, start)
        assert running.total("dead") == len(bad)

    dead = rows(url, "SELECT topic, reason, payload_size FROM trygg.dead_letters ORDER BY reason")
    assert sorted(dead) == sorted((t, reason, len(p)) for t, p, reason in bad)
    assert sorted(rows(url, "SELECT device_id, event_id FROM trygg.events")) == [(alarm, "e-1"), (motion, "e-2")]
    assert rows(url, "SELECT online FROM trygg.device_status WHERE device_id = %s", alarm) == [(True,)]
    check_handed_on(items, {alarm: ["e-1"], motion: ["e-2"]})
    statuses = [item for _, _, item in items if isinstance(item, DeviceStatus)]
    assert [(s.device_id, s.online) for s in statuses] == [(alarm, True)]


async def set_ack_wait(js: JetStreamContext, seconds: float) -> None:
    for p in range(DEVICE_PARTITIONS):
        info = await js.consumer_info(MQTT_STREAM, ingest_consumer(p))
        info.config.ack_wait = seconds
        await js.add_consumer(MQTT_STREAM, info.config)  # an update of what may change


@pytest.mark.serial  # ack waits of 1.5 s: a loaded neighbour would make them look missed
def test_alarms_go_on_while_postgresql_is_down_and_everything_is_stored_once_it_returns(
        nats_cluster: NatsCluster, private_postgres: PostgresInstance) -> None:
    asyncio.run(database_down(nats_cluster, private_postgres))


async def database_down(cluster: NatsCluster, pg: PostgresInstance) -> None:
    """Messages are held (not acknowledged, kept from redelivery by `in_progress` over
    several ack waits, here made short) while PostgreSQL is stopped; alarms reach the
    resident partitions at once; once it is back everything is stored exactly once."""
    url = pg.url("trygg")
    tag = f"d{uuid.uuid4().hex[:6]}"
    residents = 20
    ack_wait = 1.5
    async with owners(cluster, world(tag, residents), url) as (js, running):
        await set_ack_wait(js, ack_wait)
        try:
            running.start()
            start = await stream_end(js)
            await asyncio.to_thread(publish, cluster, [(topic(f"{tag}.0.motion"), event("e-0", "motion"))])
            assert await eventually(lambda: count(url), lambda n: n == 1) == 1

            await asyncio.to_thread(pg.stop)
            loop = asyncio.get_running_loop()
            messages = [(topic(f"{tag}-{i}-alarm"), event("e-1", "alarm.button")) for i in range(residents)]
            messages += [(topic(f"{tag}.{i}.motion"), event(f"e-{k}", "motion"))
                         for k in range(1, 4) for i in range(residents)]
            sent_at = loop.time()
            await asyncio.to_thread(publish, cluster, messages)

            def alarms(items: list[Handed]) -> int:
                return sum(1 for _, msg_id, _ in items if msg_id and msg_id.endswith("-alarm/e-1"))

            items = await eventually(lambda: handed_on(js, start), lambda xs: alarms(xs) == residents, within=5)
            assert alarms(items) == residents
            assert loop.time() - sent_at < 3.0
            await asyncio.sleep(3 * ack_wait)  # held: neither acknowledged nor delivered again
            assert await waiting(js) == len(messages)
            infos = [await js.consumer_info(MQTT_STREAM, ingest_consumer(p)) for p in range(DEVICE_PARTITIONS)]
            assert sum(i.num_redelivered for i in infos) == 0

            await asyncio.to_thread(pg.start)
            total = 1 + len(messages)
            assert await eventually(lambda: count(url), lambda n: n >= total, within=30) == total
            assert await eventually(lambda: waiting(js), lambda n: n == 0) == 0
            items = await handed_on(js, start)
        finally:
            await set_ack_wait(js, 30.0)

    stored = stored_in_order(url)
    assert len(stored) == len(set(stored)) == total
    expected = keys_in_order([(f"{tag}.0.motion", "e-0"), *sent_keys(messages)])
    assert keys_in_order(stored) == expected
    check_handed_on(items, expected)
    assert running.total("stored") == total


def test_a_partition_that_changes_owner_mid_stream_loses_nothing_and_stores_nothing_twice(
        nats_cluster: NatsCluster, database: str) -> None:
    asyncio.run(owner_moves(nats_cluster, database))


async def owner_moves(cluster: NatsCluster, url: str) -> None:
    tag = f"o{uuid.uuid4().hex[:6]}"
    residents, per_device = 100, 15
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    messages = [(topic(device), event(f"e-{k}", kind, ts=t0 + timedelta(seconds=k)))
                for k in range(per_device) for i in range(residents)
                for device, kind in ((f"{tag}-{i}-alarm", "alarm.button"), (f"{tag}.{i}.motion", "motion"))]
    expected = keys_in_order(sent_keys(messages))
    total = len(messages)
    registry = world(tag, residents)

    async with owners(cluster, registry, url) as (js, first):
        start = await stream_end(js)
        first.start()
        publishing = asyncio.create_task(asyncio.to_thread(publish, cluster, messages))
        assert await eventually(lambda: count(url), lambda n: n >= total // 5) < total
        await first.stop()  # the leases move: every owner cancelled mid-stream
        loop = asyncio.get_running_loop()
        moved_at = loop.time()
        second = Owners(js, registry, first.pool)
        second.start()
        try:
            await publishing
            assert await eventually(lambda: count(url), lambda n: n >= total, within=25) == total
            assert loop.time() - moved_at < 20  # what the first owners held came back at once (nak)
            assert await eventually(lambda: waiting(js), lambda n: n == 0) == 0
            items = await handed_on(js, start)
        finally:
            await second.stop()
        assert second.total("stored") > 0  # the first owners left work behind
        assert first.total("stored") + second.total("stored") == total

    stored = stored_in_order(url)
    assert len(stored) == len(set(stored)) == total
    assert keys_in_order(stored) == expected
    assert len(items) == total  # a second copy handed on is dropped by the stream (message id)
    check_handed_on(items, expected)
