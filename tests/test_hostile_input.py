"""Hostile MQTT input against a real Mosquitto and a real PostgreSQL (issue 13, "Nothing
stops the alarm path"): whatever one message holds, the gateway keeps serving, the
message is a dead letter with its reason, and it is acknowledged, so the broker does not
redeliver it after a reconnect. A flood of dead letters is bounded and summarised."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY

from gateway.dead_letters import DeadLetterLimits
from mqtt import Message, Subscriber
from tests.fix_db import scalar
from tests.fix_gateway import StartGateway, count
from tests.fix_mqtt import MosquittoInstance, Publisher, running
from tests.helpers import event, wait_for
from trygg.contract import Event
from trygg.pipeline import DeviceStatus

pytestmark = pytest.mark.integration

#: what the gateway stored: events, and heartbeats, which have a table of their own
#: (docs/storage.md "Heartbeats")
STORED = "SELECT (SELECT count(*) FROM trygg.events) + (SELECT count(*) FROM trygg.heartbeats)"







def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _doc(event_id: str = "h-1", kind: str = "alarm.button", data: str = "{}", ts: str | None = None,
         extra: str = "") -> bytes:
    """An event's JSON text written by hand, so that it can hold what `json.dumps` never
    writes (lone surrogate escapes, NaN, 1e400, odd offsets)."""
    ts = ts or datetime.now(UTC).isoformat()
    return f'{{"id": "{event_id}", "ts": "{ts}", "type": "{kind}", "data": {data}{extra}}}'.encode()


def _offset(offset: str) -> str:
    """Now, written with the UTC offset `offset` (e.g. `+20:00`)."""
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = (int(part) for part in offset[1:].split(":"))
    zone = timedelta(hours=hours, minutes=minutes) * sign
    local = (datetime.now(UTC) + zone).replace(tzinfo=None)
    return local.isoformat() + offset


POISON = _doc("p-1", "heartbeat", data="[" * 3000 + "]" * 3000)

HOSTILE: list[tuple[str, str, bytes, str]] = [
    # (name, device, payload, reason)
    ("3000 levels deep", "d-1-alarm", POISON, "too_deep"),
    ("20 levels deep", "d-1-alarm", _doc("p-1", "heartbeat", data='{"a":' * 20 + "1" + "}" * 20), "too_deep"),
    ("surrogate in the id", "d-1-alarm", _doc(r"e-\ud800"), "bad_text"),
    ("surrogate in the type", "d-1-alarm", _doc(kind=r"alarm.button\udfff"), "bad_text"),
    ("surrogate in a data key", "d-1-alarm", _doc(data=r'{"\udc00": 1}'), "bad_text"),
    ("surrogate in a data value", "d-1-door", _doc(kind="door.opened", data=r'{"door": "\ud800"}'), "bad_text"),
    ("surrogate in a key outside data", "d-1-alarm", _doc(extra=r', "\ud800x": true'), "bad_text"),
    ("NaN", "d-1-alarm", _doc(data='{"x": NaN}'), "bad_number"),
    ("Infinity", "d-1-alarm", _doc(data='{"x": Infinity}'), "bad_number"),
    ("-Infinity outside data", "d-1-alarm", _doc(extra=', "x": -Infinity'), "bad_number"),
    ("1e400", "d-1-alarm", _doc(data='{"x": 1e400}'), "bad_number"),
    ("0e-99999", "d-1-alarm", _doc(data='{"x": 0e-99999}'), "bad_number"),
    ("an integer past 2^53", "d-1-alarm", _doc(data='{"x": 12345678901234567890}'), "bad_number"),
    ("offset +20:00", "d-1-alarm", _doc(ts=_offset("+20:00")), "bad_time"),
    ("offset -16:00", "d-1-alarm", _doc(ts=_offset("-16:00")), "bad_time"),
]


@pytest.mark.parametrize(("name", "device", "payload", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_message_is_a_dead_letter_and_the_gateway_keeps_serving(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str,
    name: str, device: str, payload: bytes, reason: str,
) -> None:
    handed: list[str] = []

    def sink(item: Event | DeviceStatus) -> None:
        handed.append(item.event_id if isinstance(item, Event) else "status")

    gw = start_gateway(sink=sink)
    alarm = f"{prefix}/devices/d-1-alarm/events"
    publisher.publish_all([(f"{prefix}/devices/{device}/events", payload)])
    publisher.publish_all([(alarm, event("after-1", "heartbeat")), (alarm, event("press-1", "alarm.button"))])

    assert wait_for(lambda: "press-1" in handed, lambda seen: seen, timeout=10), "the alarm never reached the rules"
    assert wait_for(lambda: count(database, STORED), lambda n: n == 2, timeout=10) == 2, \
        "events after it were not stored"
    assert wait_for(lambda: count(database, "SELECT count(*) FROM trygg.dead_letters"),
                    lambda n: n >= 1, timeout=10) == 1
    with psycopg.connect(database) as conn:
        stored = conn.execute("SELECT event_id FROM trygg.events ORDER BY event_id").fetchall()
        beats = conn.execute("SELECT device_id FROM trygg.heartbeats").fetchall()
        dead = conn.execute("SELECT topic, payload, reason, detail FROM trygg.dead_letters").fetchall()
    assert stored == [("press-1",)]
    assert beats == [("d-1-alarm",)]  # after-1
    [(topic, raw, got_reason, detail)] = dead
    assert (topic, bytes(raw), got_reason) == (f"{prefix}/devices/{device}/events", payload, reason)
    assert detail
    assert sorted(handed) == ["after-1", "press-1"], "the hostile event was handed to the rules"

    # Acknowledged: a gateway on the same persistent session does not get it again.
    gw.stop()
    start_gateway(sink=sink)
    publisher.publish_all([(alarm, event("marker", "heartbeat"))])
    assert wait_for(lambda: count(database, STORED), lambda n: n == 3, timeout=10) == 3
    time.sleep(0.3)
    assert count(database, "SELECT count(*) FROM trygg.dead_letters") == 1, "redelivered after a reconnect"


def test_a_poison_waiting_in_the_session_does_not_keep_the_gateway_from_starting(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    """The poison was published while the gateway was down: on connecting, the broker
    sends it before the SUBACK. The gateway starts all the same (it once failed with
    `BrokerUnavailable … no SUBACK` on every try), stores what came after the poison,
    and dead-letters the poison once."""
    start_gateway().stop()  # the persistent session now exists
    alarm = f"{prefix}/devices/d-1-alarm/events"
    publisher.publish_all([(alarm, POISON), (alarm, event("press-1", "alarm.button"))])
    start_gateway()
    assert wait_for(lambda: count(database), lambda n: n == 1, timeout=10) == 1
    assert wait_for(lambda: scalar(database, "SELECT string_agg(reason, ',') FROM trygg.dead_letters"),
                    lambda reasons: reasons is not None, timeout=10) == "too_deep"


def test_an_unexpected_error_handling_one_message_is_a_dead_letter_not_a_lost_connection(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    """A bug in the gateway that one message triggers (here an injected KeyError) costs
    that message only: it is dead-lettered as `internal_error` with the exception,
    acknowledged, and the next alarm goes through on the same connection."""
    handed: list[str] = []
    gw = start_gateway(sink=lambda item: handed.append(getattr(item, "event_id", "status")))
    accept = gw._validator.accept

    def buggy(topic: str | bytes, payload: bytes, received_at: datetime) -> object:
        if b"boom" in payload:
            raise KeyError("boom")
        return accept(topic, payload, received_at)

    gw._validator.accept = buggy  # type: ignore[method-assign,assignment]
    generation = gw._subscriber.generation
    alarm = f"{prefix}/devices/d-1-alarm/events"
    publisher.publish_all([(alarm, event("boom", "alarm.button"))])
    publisher.publish_all([(alarm, event("press-1", "alarm.button"))])
    assert wait_for(lambda: "press-1" in handed, lambda seen: seen, timeout=10)
    assert wait_for(lambda: count(database, "SELECT count(*) FROM trygg.dead_letters"),
                    lambda n: n >= 1, timeout=10) == 1
    row = scalar(database, "SELECT reason || ' ' || detail FROM trygg.dead_letters")
    assert row == "internal_error KeyError: 'boom'"
    assert gw._subscriber.generation == generation, "the connection was dropped"
    gw.stop()
    start_gateway()
    publisher.publish_all([(alarm, event("marker", "heartbeat"))])
    assert wait_for(lambda: count(database, STORED), lambda n: n == 2, timeout=10) == 2
    time.sleep(0.3)
    assert count(database, "SELECT count(*) FROM trygg.dead_letters") == 1, "redelivered after a reconnect"


def test_an_exception_in_the_handler_of_received_messages_keeps_the_connection(
    mosquitto: MosquittoInstance, publisher: Publisher, prefix: str
) -> None:
    """The last line of defence, under the gateway: whatever the handler of received
    messages raises, the subscriber's connection stays up (asyncio drops a connection
    whose `data_received` raises, and the broker would redeliver the same message to the
    same fault on every reconnect)."""
    got: list[bytes] = []

    def on_messages(messages: list[Message], generation: int) -> None:
        for msg in messages:
            if msg.payload == b"boom":
                raise RecursionError("handler bug")
            got.append(msg.payload)

    errors = metric("trygg_mqtt_receive_errors_total")
    sub = Subscriber(mosquitto.address, f"s-{uuid.uuid4().hex[:8]}", [f"{prefix}/#"], on_messages,
                     session_expiry=0)
    with running(sub):
        generation = sub.generation
        publisher.publish_all([(f"{prefix}/x", b"boom")])
        # "after" only once "boom" has been handled: in one read both would be one batch,
        # and this handler raises on the batch before it reaches "after".
        wait_for(lambda: metric("trygg_mqtt_receive_errors_total"), lambda n: n == errors + 1, timeout=5)
        publisher.publish_all([(f"{prefix}/x", b"after")])
        assert wait_for(lambda: list(got), lambda g: g == [b"after"], timeout=5) == [b"after"]
        assert sub.generation == generation and sub.connected.is_set(), "the connection was dropped"
        assert metric("trygg_mqtt_receive_errors_total") == errors + 1


FLOOD = 20_000


@pytest.mark.slow
def test_a_dead_letter_flood_is_bounded_summarised_counted_and_does_not_hold_up_an_alarm(
    start_gateway: StartGateway, mosquitto: MosquittoInstance, database: str, prefix: str
) -> None:
    """20,000 events of an unknown device in a few seconds: a bounded number of rows,
    the rest counted in the metrics and summarised in one row per source (here when the
    gateway stops, before its 60 s interval), and an alarm sent meanwhile reaches the
    rules and is stored."""
    handed: list[str] = []
    gw = start_gateway(sink=lambda item: handed.append(getattr(item, "event_id", "status")))
    counted = metric("trygg_gateway_dead_letters_total", reason="unknown_device")
    flood = [(f"{prefix}/devices/d-404/events", event(f"x-{i}", "alarm.button")) for i in range(FLOOD)]
    flooder, alarm = Publisher(mosquitto.address), Publisher(mosquitto.address)
    sender = threading.Thread(target=flooder.publish_all, args=(flood,))
    started = time.monotonic()
    sender.start()
    try:
        wait_for(lambda: metric("trygg_gateway_dead_letters_total", reason="unknown_device") - counted,
                 lambda n: n >= 2000, timeout=30, interval=0.01)
        during = metric("trygg_gateway_dead_letters_total", reason="unknown_device") - counted
        alarm.publish_all([(f"{prefix}/devices/d-1-alarm/events", event("press-1", "alarm.button"))])
        assert wait_for(lambda: "press-1" in handed, lambda seen: seen, timeout=10), "the alarm was held up"
        sender.join(60)
    finally:
        flooder.close()
        alarm.close()
    elapsed = time.monotonic() - started
    assert during < FLOOD, "the alarm was not sent during the flood"
    assert wait_for(lambda: metric("trygg_gateway_dead_letters_total", reason="unknown_device") - counted,
                    lambda n: n >= FLOOD, timeout=30) == FLOOD
    assert wait_for(lambda: count(database), lambda n: n == 1) == 1

    gw.stop()  # writes the summaries not yet due
    with psycopg.connect(database) as conn:
        whole = conn.execute("SELECT count(*) FROM trygg.dead_letters WHERE reason = 'unknown_device'").fetchone()
        summaries = conn.execute("SELECT topic, length(payload), detail FROM trygg.dead_letters"
                                 " WHERE reason = 'rate_limited'").fetchall()
    assert whole is not None
    [rows] = whole
    assert rows <= 20 + 2 * elapsed + 2, f"{rows} dead-letter rows in {elapsed:.1f} s"
    assert len(summaries) == 1
    [(topic, sample, detail)] = summaries
    assert topic == f"{prefix}/devices/d-404/events"
    assert sample <= 256
    held = re.search(r"(\d+) dead letters? held back", detail)
    assert held is not None, detail
    assert int(held.group(1)) + rows == FLOOD
    assert "unknown_device" in detail
    assert metric("trygg_gateway_dead_letters_held_back_total", reason="unknown_device") >= int(held.group(1))


def test_summaries_are_written_while_the_gateway_runs_once_per_interval(
    start_gateway: StartGateway, publisher: Publisher, database: str, prefix: str
) -> None:
    """With a short interval (here 1 s): what a source held back is summarised in a row
    of its own while the gateway runs; a source that keeps sending gets one a second."""
    start_gateway(dead_letter_limits=DeadLetterLimits(source_burst=5, source_rate=1, summary_interval_s=1.0))
    bad = f"{prefix}/devices/d-1-alarm/events"
    publisher.publish_all([(bad, b"{oops")] * 100)
    summary = wait_for(lambda: scalar(database, "SELECT detail FROM trygg.dead_letters WHERE reason = 'rate_limited'"),
                       lambda detail: detail is not None, timeout=5)
    assert summary is not None, "no summary while the gateway runs"
    held = re.search(r"(\d+) dead letters? held back", str(summary))
    assert held is not None and "bad_json" in str(summary)
    stored = count(database, "SELECT count(*) FROM trygg.dead_letters WHERE reason = 'bad_json'")
    assert int(held.group(1)) + stored == 100
    time.sleep(1.2)
    publisher.publish_all([(bad, b"{oops")] * 100)
    assert wait_for(lambda: count(database, "SELECT count(*) FROM trygg.dead_letters WHERE reason = 'rate_limited'"),
                    lambda n: n == 2, timeout=5) == 2


@pytest.mark.slow
def test_a_flood_of_large_dead_letters_from_invented_devices_stays_within_the_byte_budget(
    start_gateway: StartGateway, mosquitto: MosquittoInstance, database: str, prefix: str
) -> None:
    """5,000 events of 16 KB, each from a device id of its own (once 81 MiB of rows in
    1.9 s): the stored bytes stay within the budget (2 MiB at once, 256 KiB a second),
    the map of sources stays bounded, and every one is counted in a row or a summary."""
    counted = metric("trygg_gateway_dead_letters_total", reason="unknown_device")
    gw = start_gateway()
    pad = "x" * 15_800
    flood: list[tuple[str, bytes | str]] = [
        (f"{prefix}/devices/inv-{i}/events", event(f"x-{i}", "alarm.button", {"pad": pad})) for i in range(5000)]
    assert all(15_800 < len(raw) <= 16_384 for _, raw in flood)
    flooder = Publisher(mosquitto.address)
    started = time.monotonic()
    try:
        flooder.publish_all(flood)
    finally:
        flooder.close()
    assert wait_for(lambda: metric("trygg_gateway_dead_letters_total", reason="unknown_device") - counted,
                    lambda n: n >= 5000, timeout=30) == 5000
    elapsed = time.monotonic() - started
    gw.stop()
    with psycopg.connect(database) as conn:
        whole = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM trygg.dead_letters"
                             " WHERE reason = 'unknown_device'").fetchone()
        summaries = conn.execute("SELECT length(payload), detail FROM trygg.dead_letters"
                                 " WHERE reason = 'rate_limited'").fetchall()
    assert whole is not None
    rows, size = whole
    assert size <= 2 * 2**20 + 256 * 2**10 * (elapsed + 1), f"{size} bytes stored whole in {elapsed:.1f} s"
    assert len(summaries) <= 1024 + 1, "more summaries than sources remembered"
    assert all(sample <= 256 for sample, _ in summaries)
    held = [re.search(r"(\d+) dead letters? held back", detail) for _, detail in summaries]
    assert rows + sum(int(h.group(1)) for h in held if h is not None) == 5000
