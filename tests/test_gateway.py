"""The gateway against a real Mosquitto and a real PostgreSQL: every bad message is
dead-lettered with its reason, every good one stored exactly once, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from gateway import DurableWriter, Gateway, GatewayConfig, Pending, Spool
from storage import EventStore, Pool, save_registry
from tests.fix_db import PostgresInstance, scalar
from tests.fix_gateway import StartGateway, count
from tests.fix_mqtt import MosquittoInstance, Publisher
from tests.helpers import event, small_registry, wait_for
from trygg.contract import Event, EventType, parse_event

pytestmark = pytest.mark.integration

#: what the gateway stored: events, and heartbeats, which have a table of their own
#: (docs/storage.md "Heartbeats")
STORED = "SELECT (SELECT count(*) FROM trygg.events) + (SELECT count(*) FROM trygg.heartbeats)"







def test_a_valid_event_is_stored_with_its_resident(start_gateway: StartGateway, publisher: Publisher,
                                                   database: str, prefix: str) -> None:
    start_gateway()
    publisher.publish_all([(f"{prefix}/devices/d-1-fall/events",
                            event("e-1", "fall.detected", {"confidence": 0.93}))])
    assert wait_for(lambda: count(database), lambda n: n == 1) == 1
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT device_id, event_id, resident_id, type, data, "
                           "received_at >= ts - interval '1 minute' FROM trygg.events").fetchone()
    assert row == ("d-1-fall", "e-1", "r-1", "fall.detected", {"confidence": 0.93}, True)


def test_data_is_stored_as_the_device_wrote_it(start_gateway: StartGateway, publisher: Publisher,
                                               database: str, prefix: str) -> None:
    """The payload's own text is what PostgreSQL stores `data` from: pretty-printed JSON
    with tabs and line breaks, escapes, an id with a backslash and a tab, `data: null`
    and no `data` at all come out as the device meant them."""
    ts = datetime.now(UTC).isoformat()
    payloads = [
        ("d-1-motion", f'{{\n\t"id": "e-\\\\1\\t",\r\n\t"ts": "{ts}",\n\t"type": "motion",'
                       f'\n\t"data": {{"room": "stue \\"nord\\" \\u00e6\\\\x"}}\n}}'),
        ("d-1-motion", f'{{"id": "e-2", "ts": "{ts}", "type": "motion", "data": null}}'),
        ("d-1-fall", f'{{"id": "e-3", "ts": "{ts}", "type": "fall.detected"}}'),
    ]
    start_gateway()
    publisher.publish_all([(f"{prefix}/devices/{device}/events", text.encode()) for device, text in payloads])
    assert wait_for(lambda: count(database), lambda n: n == 3) == 3
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT event_id, data FROM trygg.events ORDER BY received_at, event_id").fetchall()
    assert sorted(rows) == [("e-2", {}), ("e-3", {}), ("e-\\1\t", {"room": 'stue "nord" æ\\x'})]


def test_the_store_copies_payload_text_as_it_came(database: str, pool: Pool) -> None:
    """At the store, with no row-by-row retry to hide a bad COPY row: payload text with
    tabs, line breaks and backslashes (also in the id) is stored, and so is an event
    without payload text (from the spool), from its `data`."""
    now = datetime.now(UTC)
    ts = now.isoformat()
    sent = [
        ("d-1-motion", f'{{\n\t"id": "e\\\\\\t1",\r\n "ts": "{ts}", "type": "motion",'
                       f' "data": {{"room": "a\\tb\\\\c"}}}}'),
        ("d-1-fall", f'{{"id": "e-2", "ts": "{ts}", "type": "fall.detected", "data": null}}'),
    ]
    events = [parse_event(device, text.encode(), now) for device, text in sent]
    events.append(Event("d-1-motion", "e-3", EventType.MOTION, now, now, {"room": "stue"}))  # no text
    for ev in events:
        ev.resident_id = "r-1"
    store = EventStore(pool)
    try:
        assert store.write(events) == 3
    finally:
        store.close()
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT event_id, data, ts = %s FROM trygg.events ORDER BY event_id", (now,)).fetchall()
    assert rows == [("e-2", {}, True), ("e-3", {"room": "stue"}, True), ("e\\\t1", {"room": "a\tb\\c"}, True)]


class FaultOnce(EventStore):
    """The real store, with one fault the first time: `cut` (the server drops the
    connection right after the writer's ping, as a restart would), `check` (an unexpected
    error while the writer brings the database into use), `batch` (an unexpected error
    writing a batch) or `touch` (an unexpected error writing last-heard times)."""

    def __init__(self, pool: Pool, conninfo: str, fault: str) -> None:
        super().__init__(pool)
        self._conninfo = conninfo
        self.fault: str | None = fault

    def ensure_partitions(self) -> None:
        if self.fault == "cut":
            self.fault = None
            pid = self._connection().info.backend_pid
            with psycopg.connect(self._conninfo, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        elif self.fault == "check":
            self.fault = None
            raise RuntimeError("unexpected error in the database check")
        super().ensure_partitions()

    def write(self, *args: Any, **options: Any) -> int:
        if self.fault == "batch":
            self.fault = None
            raise RuntimeError("unexpected error writing a batch")
        return super().write(*args, **options)

    def touch_devices(self, last_seen: dict[str, datetime]) -> None:
        if self.fault == "touch":
            self.fault = None
            raise RuntimeError("unexpected error writing last-heard times")
        super().touch_devices(last_seen)


@pytest.mark.parametrize("fault", ["cut", "check", "batch", "touch"])
def test_the_writer_thread_survives_a_lost_connection_or_an_unexpected_error(
    database: str, pool: Pool, tmp_path: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong on its way to PostgreSQL, the writer takes it as the database
    being down: it spools, acknowledges, and stores everything once a retry succeeds. Its
    thread does not end (an ended writer stores and acknowledges nothing more)."""
    monkeypatch.setattr("gateway.durable.TOUCH_INTERVAL_S", 0.0)  # last-heard times after every batch
    acked: list[int] = []
    writer = DurableWriter(FaultOnce(pool, database, fault), Spool(tmp_path / "spool"),
                           lambda mids, generation: acked.extend(mids), retry_s=0.2)
    now = datetime.now(UTC)
    events = [Event("d-1-motion", f"e-{i}", EventType.MOTION, now, now, {"room": "stue"}) for i in range(6)]
    for ev in events:
        ev.resident_id = "r-1"
    writer.start()
    try:
        writer.put(Pending(events[:3], [1, 2, 3], 1))
        assert wait_for(lambda: count(database), lambda n: n == 3, timeout=15) == 3
        writer.put(Pending(events[3:], [4, 5, 6], 1))  # after the fault
        assert wait_for(lambda: count(database), lambda n: n == 6, timeout=15) == 6
        assert wait_for(lambda: sorted(acked), lambda a: len(a) == 6, timeout=5) == [1, 2, 3, 4, 5, 6]
        assert writer._thread.is_alive()
        assert writer.database_ok
    finally:
        writer.stop()


def test_a_payload_the_database_could_not_store_is_a_dead_letter_and_the_rest_is_stored(
        start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str) -> None:
    """A field outside the contract that JSON in PostgreSQL refuses (NaN) is refused at
    the gateway with its reason (docs/ingest.md "Bounds"), so it can neither fail a
    batch nor raise an alert whose event is not stored; the events around it are stored."""
    ts = datetime.now(UTC).isoformat()
    start_gateway()
    publisher.publish_all([
        (f"{prefix}/devices/d-1-motion/events",
         f'{{"id": "e-nan", "ts": "{ts}", "type": "motion", "extra": NaN, "data": {{"room": "bad"}}}}'.encode()),
        (f"{prefix}/devices/d-1-motion/events", event("e-ok", "motion", {"room": "kitchen"})),
    ])
    assert wait_for(lambda: count(database) + count(database, "SELECT count(*) FROM trygg.dead_letters"),
                    lambda n: n == 2) == 2
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT event_id, data FROM trygg.events ORDER BY event_id").fetchall()
        dead = conn.execute("SELECT reason FROM trygg.dead_letters").fetchall()
    assert rows == [("e-ok", {"room": "kitchen"})]
    assert dead == [("bad_number",)]


BAD_MESSAGES: list[tuple[str, str, bytes, str]] = [
    # (name, device/topic tail, payload, expected reason)
    ("bad json", "d-1-fall/events", b"{oops", "bad_json"),
    ("not an object", "d-1-fall/events", b'"fall"', "not_object"),
    ("too large", "d-1-fall/events", b'{"id": "' + b"x" * 17_000 + b'"}', "too_large"),
    ("not utf-8", "d-1-fall/events", b"\xff\xfe\xfd", "not_utf8"),
    ("missing id", "d-1-fall/events", b'{"ts": "2026-11-22T13:00:00Z", "type": "fall.detected"}',
     "bad_field"),
    ("unknown type", "d-1-fall/events", event("e-x", "fall.maybe"), "unknown_type"),
    ("bad field value", "d-1-fall/events", event("e-x", "fall.detected", {"confidence": 7}),
     "bad_field"),
    ("bad time", "d-1-fall/events", b'{"id": "e-x", "ts": "soon", "type": "fall.detected"}',
     "bad_time"),
    ("far future", "d-1-fall/events",
     event("e-x", "fall.detected", ts=datetime.now(UTC) + timedelta(days=2)), "bad_time"),
    ("too old", "d-1-fall/events",
     event("e-x", "fall.detected", ts=datetime.now(UTC) - timedelta(days=31)), "bad_time"),
    ("unknown device", "d-404/events", event("e-x", "alarm.button"), "unknown_device"),
    ("type not fitting the kind", "d-1-fall/events", event("e-x", "smoke.detected"), "wrong_kind"),
    ("bad topic", "d 1 fall/events", event("e-x", "fall.detected"), "bad_topic"),
    ("bad status", "d-1-fall/status", b"sleeping", "bad_status"),
]


def test_every_class_of_bad_input_is_dead_lettered_and_the_gateway_keeps_serving(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    start_gateway()
    publisher.publish_all([(f"{prefix}/devices/{tail}", raw) for _, tail, raw, _ in BAD_MESSAGES])
    publisher.publish_all([(f"{prefix}/devices/d-1-alarm/events", event("e-ok", "alarm.button"))])

    assert wait_for(lambda: count(database, "SELECT count(*) FROM trygg.dead_letters"),
                    lambda n: n >= len(BAD_MESSAGES)) == len(BAD_MESSAGES)
    assert wait_for(lambda: count(database), lambda n: n == 1) == 1
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT topic, payload, reason, detail, payload_size "
                            "FROM trygg.dead_letters ORDER BY id").fetchall()
    for (name, tail, raw, reason), (topic, stored, got_reason, detail, size) in zip(
            BAD_MESSAGES, rows, strict=True):
        assert got_reason == reason, name
        assert topic == f"{prefix}/devices/{tail}", name
        assert bytes(stored) == raw[:16384], name
        assert size == len(raw), name
        assert detail, name


def test_a_resent_event_is_stored_once(start_gateway: StartGateway, publisher: Publisher,
                                       database: str, prefix: str) -> None:
    start_gateway()
    topic = f"{prefix}/devices/d-1-alarm/events"
    raw = event("e-same", "alarm.button")
    publisher.publish_all([(topic, raw), (topic, raw)])
    publisher.publish_all([(topic, event("e-next", "alarm.button"))])
    assert wait_for(lambda: count(database), lambda n: n >= 2) == 2
    # Again much later, after the in-memory window: the store still knows it.
    publisher.publish_all([(topic, raw)])
    wait_for(lambda: count(database, "SELECT count(*) FROM trygg.event_keys"), lambda n: n > 2,
             timeout=1.5)
    assert count(database, "SELECT count(*) FROM trygg.events WHERE event_id = 'e-same'") == 1


def test_events_published_while_the_gateway_is_down_are_stored_when_it_returns(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    gw = start_gateway()  # creates the persistent session
    gw.stop()
    topic = f"{prefix}/devices/d-1-motion/events"
    publisher.publish_all([(topic, event(f"m-{i}", "motion", {"room": "kitchen"}))
                           for i in range(3000)])
    start_gateway()
    assert wait_for(lambda: count(database), lambda n: n >= 3000) == 3000


def test_postgres_down_for_30_s_spools_then_stores_everything_once_in_order(
    start_gateway: StartGateway, publisher: Publisher, private_postgres: PostgresInstance,
    prefix: str, tmp_path: Path
) -> None:
    url = private_postgres.url("trygg")
    start_gateway(conninfo=url)
    devices = ["d-1-alarm", "d-1-motion", "d-2-alarm"]
    stop = threading.Event()
    sent: dict[str, int] = dict.fromkeys(devices, 0)

    def stream() -> None:  # ~150 events/s until stopped
        while not stop.is_set():
            for dev in devices:
                kind = "motion" if "motion" in dev else "heartbeat"
                publisher.publish(f"{prefix}/devices/{dev}/events", event(f"s-{sent[dev]:06d}", kind))
                sent[dev] += 1
            stop.wait(0.02)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        wait_for(lambda: count(url, STORED), lambda n: n > 100)
        private_postgres.stop("immediate")
        stop.wait(30)
        spools = list((tmp_path / "spool").glob("shard-*/spool.log"))
        assert spools and all(p.stat().st_size > 0 for p in spools), "events were not spooled"
        private_postgres.start()
        stop.wait(3)
    finally:
        stop.set()
        streamer.join()
    total = sum(sent.values())
    assert wait_for(lambda: count(url, STORED), lambda n: n >= total, timeout=60) == total
    assert wait_for(lambda: [p.stat().st_size for p in spools], lambda sizes: not any(sizes)) == [0] * len(spools), \
        "the spool was not emptied after replay"
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT event_id FROM trygg.events WHERE device_id = 'd-1-motion' ORDER BY seq")]
        assert ids == sorted(ids), "stored out of order"
        assert len(ids) == len(set(ids)) == sent["d-1-motion"]
        for dev in ("d-1-alarm", "d-2-alarm"):  # heartbeats: one row per device and ts
            assert conn.execute("SELECT count(*), count(DISTINCT ts) FROM trygg.heartbeats WHERE device_id = %s",
                                (dev,)).fetchone() == (sent[dev], sent[dev])


@pytest.mark.slow
def test_kill_9_during_a_burst_of_10000_loses_nothing_and_stores_nothing_twice(
    mosquitto: MosquittoInstance, database: str, prefix: str, tmp_path: Path
) -> None:
    with psycopg.connect(database) as conn:
        save_registry(conn, small_registry(extra_devices=100), actor="test")
    env = {**os.environ, "TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": database,
           "TRYGG_MQTT_PREFIX": prefix, "TRYGG_MQTT_CLIENT_ID": f"k{prefix.split('/')[0]}",
           "TRYGG_DATA_DIR": str(tmp_path / "data"), "TRYGG_LOG_LEVEL": "warning"}
    log = (tmp_path / "gateway.log").open("wb")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "trygg", "gateway"], env=env,
                                stdout=log, stderr=log)

    def burst_rows() -> int:  # the burst's events, and its heartbeats (the load devices send only those)
        return count(database, "SELECT (SELECT count(*) FROM trygg.events WHERE event_id LIKE 'b-%%')"
                               " + (SELECT count(*) FROM trygg.heartbeats WHERE device_id LIKE 'load-%%')")

    gateway = start()
    pub = Publisher(mosquitto.address, protocol=mqtt.MQTTv5)
    try:
        # Until the gateway has subscribed, nothing queues for it: probe until one lands.
        probe = iter(range(1000))
        stored = wait_for(
            lambda: pub.publish_all([(f"{prefix}/devices/d-2-alarm/events",
                                      event(f"ready-{next(probe)}"))]) or count(database, STORED),
            lambda n: n > 0, interval=0.2)
        assert stored > 0, "the gateway never started"
        # half heartbeats (stored by device and ts), half events (through the keys)
        start_ts = datetime.now(UTC)
        burst = [(f"{prefix}/devices/load-{i % 100}/events",
                  event(f"b-{i:05d}", "heartbeat", {"battery_pct": 80}, start_ts + timedelta(milliseconds=i))
                  if i % 2 else event(f"b-{i:05d}", "alarm.cancel", ts=start_ts + timedelta(milliseconds=i)))
                 for i in range(10_000)]
        sender = threading.Thread(target=pub.publish_all, args=(burst,))
        sender.start()
        wait_for(burst_rows, lambda n: n > 1500, interval=0.005)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
        killed_at = burst_rows()
        sender.join()
        gateway = start()
        final = wait_for(burst_rows, lambda n: n >= 10_000, timeout=120)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(20)
        pub.close()
        log.close()
    assert 0 < killed_at < 10_000, "the kill did not land inside the burst"
    assert final == 10_000
    with psycopg.connect(database) as conn:
        distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM trygg.events "
                                "WHERE event_id LIKE 'b-%'").fetchone()
        beats = conn.execute("SELECT count(*) FROM trygg.heartbeats WHERE device_id LIKE 'load-%'").fetchone()
    assert distinct == (5_000, 5_000)
    assert beats == (5_000,)


def test_status_messages_are_kept_per_device(start_gateway: StartGateway, publisher: Publisher,
                                             database: str, prefix: str) -> None:
    start_gateway()
    publisher.publish_all([(f"{prefix}/devices/d-1-alarm/status", b"online"),
                           (f"{prefix}/devices/d-1-alarm/status", b"offline")])
    row = wait_for(lambda: scalar(database, "SELECT online FROM trygg.device_status "
                                  "WHERE device_id = 'd-1-alarm'"), lambda v: v is False)
    assert row is False


def test_events_are_handed_to_the_rules_before_the_commit_and_once(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    seen: list[tuple[str, int]] = []  # (event id, its rows in PostgreSQL when handed on)

    def sink(item: object) -> None:
        event_id = getattr(item, "event_id", "status")
        stored = count(database, "SELECT count(*) FROM trygg.events WHERE event_id = %s", event_id)
        seen.append((event_id, stored))

    start_gateway(sink=sink)
    topic = f"{prefix}/devices/d-1-alarm/events"
    raw = event("e-1", "alarm.button")
    publisher.publish_all([(topic, raw), (topic, raw), (topic, b"{bad")])
    assert wait_for(lambda: count(database), lambda n: n == 1) == 1
    time.sleep(0.3)  # room for a wrong second hand-off of the re-sent copy
    assert seen == [("e-1", 0)], "handed on after the commit, twice, or a bad message handed on"


def test_an_alarm_that_arrives_during_a_long_read_overtakes_the_rest_of_it(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    """The gateway works through a large read (slow rules here, 2 ms an event) a slice at
    a time, the socket read in between: an alarm published meanwhile reaches the rules
    long before that read is done, and every event is still stored once."""
    handed: list[str] = []
    first, go, working = threading.Event(), threading.Event(), threading.Event()

    def slow_rules(item: object) -> None:
        if not isinstance(item, Event):
            return
        handed.append(item.event_id)
        if item.event_id == "hb-0":
            first.set()
            go.wait(10)  # the rest of the background arrives in the socket meanwhile
        elif item.event_id == "hb-3":
            working.set()
        time.sleep(0.002)

    start_gateway(sink=slow_rules)
    topic = f"{prefix}/devices/d-1-alarm/events"
    publisher.publish(topic, event("hb-0"))
    assert first.wait(10)
    for n in range(1, 100):
        publisher.publish(topic, event(f"hb-{n}"))
    time.sleep(0.3)
    go.set()
    assert working.wait(10)
    publisher.publish(topic, event("press-1", "alarm.button"))
    assert wait_for(lambda: len(handed), lambda n: n == 101) == 101
    assert handed.index("press-1") < handed.index("hb-40"), "the alarm waited for the read before it"
    assert wait_for(lambda: count(database, STORED), lambda n: n == 101) == 101
    assert count(database) == 1, "only the alarm is an events row; the heartbeats have their own table"


def test_a_spool_left_by_another_writer_count_is_replayed(
    mosquitto: MosquittoInstance, database: str, pool: Pool, prefix: str, tmp_path: Path
) -> None:
    from gateway import Spool
    from trygg.contract import Event, EventType

    now = datetime.now(UTC)
    Spool(tmp_path / "spool" / "shard-7").append(
        [Event("d-1-alarm", f"old-{i}", EventType.HEARTBEAT, now - timedelta(minutes=i), now, {}, "r-1")
         for i in range(5)])
    gw = Gateway(mosquitto.address, pool, small_registry(),
                 GatewayConfig(tmp_path / "spool", prefix=prefix, client_id=f"o{prefix.split('/')[0]}", writers=2))
    gw.start()
    try:
        assert wait_for(lambda: count(database, STORED), lambda n: n == 5) == 5
    finally:
        gw.stop()
    assert not (tmp_path / "spool" / "shard-7").exists(), "the spool of the gone writer was not removed"


def test_a_spool_of_the_previous_version_is_replayed_once_and_removed(
    mosquitto: MosquittoInstance, database: str, pool: Pool, prefix: str, tmp_path: Path
) -> None:
    """An operator may upgrade while PostgreSQL is down: the JSON-lines spool left by the
    previous version (a torn write glued to the next record included) is stored, once,
    from its replay offset on, and then removed."""
    from gateway.spool import encode

    now = datetime.now(UTC)
    shard = tmp_path / "spool" / "shard-0"
    shard.mkdir(parents=True)
    sent_at = [now - timedelta(minutes=i) for i in range(6)]  # heartbeats are told apart by their ts
    records = [encode(Event("d-1-alarm", f"old-{i}", EventType.HEARTBEAT, sent_at[i], now, {}, "r-1"))
               for i in range(6)]
    done = b"".join(r + b"\n" for r in records[:2])  # replayed before the upgrade
    (shard / "spool.jsonl").write_bytes(done + records[2] + b"\n" + records[3][:30] + records[4] + b"\n"
                                        + records[5] + b"\n")
    (shard / "replayed.offset").write_text(str(len(done)))
    gw = Gateway(mosquitto.address, pool, small_registry(),
                 GatewayConfig(tmp_path / "spool", prefix=prefix, client_id=f"l{prefix.split('/')[0]}", writers=1))
    gw.start()
    try:
        assert wait_for(lambda: count(database, STORED), lambda n: n == 3) == 3
    finally:
        gw.stop()
    with psycopg.connect(database) as conn:
        stored = {r[0] for r in conn.execute("SELECT ts FROM trygg.heartbeats")}
    assert stored == {sent_at[2], sent_at[4], sent_at[5]}, "old-3 was cut off by the old version's short write"
    assert sorted(p.name for p in shard.iterdir()) == ["spool.log"]


def test_positions_without_legal_basis_are_not_stored_or_used_unless_an_emergency_is_open(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    emergency: set[str] = set()
    handed: list[str] = []

    class Emergencies:
        def emergency_open(self, resident_id: str) -> bool:
            return resident_id in emergency

    start_gateway(sink=lambda item: handed.append(getattr(item, "event_id", "")), emergencies=Emergencies())
    fix = {"lat": 59.91, "lon": 10.75, "accuracy_m": 10}
    publisher.publish_all([
        (f"{prefix}/devices/d-1-gps/events", event("with-basis", "location", fix)),
        (f"{prefix}/devices/d-2-phone/events", event("no-basis", "location", fix)),
    ])
    wait_for(lambda: count(database), lambda n: n >= 1)
    emergency.add("r-2")  # an alarm of r-2 is open: its positions are needed now
    publisher.publish_all([(f"{prefix}/devices/d-2-phone/events", event("during-alarm", "location", fix)),
                           (f"{prefix}/devices/d-2-alarm/events", event("after", "heartbeat"))])
    wait_for(lambda: count(database, STORED), lambda n: n >= 3)
    with psycopg.connect(database) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM trygg.events ORDER BY seq")]
        beats = conn.execute("SELECT device_id FROM trygg.heartbeats").fetchall()
        dead = conn.execute("SELECT count(*) FROM trygg.dead_letters").fetchone()
    assert sorted(ids) == ["during-alarm", "with-basis"]  # shards commit independently
    assert beats == [("d-2-alarm",)]
    assert "no-basis" not in handed
    assert dead == (0,), "a refused position must not be kept as a dead letter either"
