"""Alert rows on their way to PostgreSQL: kept in order while the database is away,
journaled so a crash loses nothing, and never holding up the caller; journals and MQTT
payloads of the previous version's alert shape read and look the same. A fake store
stands in for PostgreSQL; the real one is in tests/test_alerts_*.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts import AlertPublisher, AlertService, AlertWriter, Change, Journal, Timeouts, metrics
from alerts.journal import Item, decode, encode
from alerts.persistence import item_of
from storage.alerts_store import AlertStore
from storage.errors import DatabaseUnavailable
from storage.local_log import LocalLog, frame
from tests.alert_intents import open_intent, registry
from trygg.alert import Alert, Transition
from trygg.contract import AlertKind

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


class FakeStore(AlertStore):
    """Commits in memory; `down` makes it refuse like an unreachable server."""

    def __init__(self) -> None:
        super().__init__("postgresql://unused")
        self.down = threading.Event()
        self.alerts: list[Alert] = []
        self.steps: list[Transition] = []
        self.attempts = 0

    def write(self, alerts: Sequence[Alert], transitions: Sequence[Transition]) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise DatabaseUnavailable("connection refused")
        self.alerts.extend(alerts)
        self.steps.extend(transitions)

    def close(self) -> None:
        pass


def changes(n: int) -> list[Item]:
    svc = AlertService(registry(), Timeouts())
    out = []
    for i in range(n):
        [change] = svc.apply([open_intent(AlertKind.ALARM, T0 + timedelta(seconds=i), resident=f"r-{i}",
                                          device=f"d-{i}")])
        out.append(item_of(change))
    return out


#: A journal record and the MQTT payload of the same change, as the previous version of
#: the alert shape wrote them: an escalated fall, acknowledged with a note JSON escapes.
PREVIOUS_RECORD = (
    b'{"a":{"alert_id":"a-1cff430e1aa8691f1d75","resident_id":"r-1","team_id":"east","kind":"fall",'
    b'"priority":"high","state":"acknowledged","opened_at":"2026-11-22T14:00:00+00:00",'
    b'"updated_at":"2026-11-22T14:01:10+00:00","acknowledged_at":"2026-11-22T14:01:10+00:00",'
    b'"acknowledged_by":"kari.s","resolved_at":null,"resolved_by":null,"closed_at":null,"note":null,'
    b'"event_count":1,"escalation_level":1,"escalated_at":"2026-11-22T14:01:00+00:00",'
    b'"trigger":{"device_id":"d-1-fall","event_id":"e-1","type":"fall.detected","ts":"2026-11-22T14:00:00+00:00",'
    b'"received_at":"2026-11-22T14:00:00+00:00"},"last_event":{"device_id":"d-1-fall","event_id":"e-1",'
    b'"type":"fall.detected","ts":"2026-11-22T14:00:00+00:00","received_at":"2026-11-22T14:00:00+00:00"},'
    b'"location":{"lat":59.9,"lon":10.7},"teams":["east","alarm-centre"],"device_id":null,"detail":{},'
    b'"sources":["d-1-fall|e-1|fall.detected|1795356000000000"],"version":3,"transition_count":3},'
    rb'"t":[[2,"2026-11-22T14:01:10+00:00","open","acknowledged","kari.s","p\u00e5 vei \ud800"]]}'
)
PREVIOUS_PAYLOAD = (
    b'{"alert_id":"a-1cff430e1aa8691f1d75","resident_id":"r-1","team_id":"east","kind":"fall",'
    b'"priority":"high","state":"acknowledged","opened_at":"2026-11-22T14:00:00+00:00",'
    b'"updated_at":"2026-11-22T14:01:10+00:00","event_count":1,"trigger":{"device_id":"d-1-fall",'
    b'"event_id":"e-1","type":"fall.detected","ts":"2026-11-22T14:00:00+00:00",'
    b'"received_at":"2026-11-22T14:00:00+00:00"},"last_event":{"device_id":"d-1-fall","event_id":"e-1",'
    b'"type":"fall.detected","ts":"2026-11-22T14:00:00+00:00","received_at":"2026-11-22T14:00:00+00:00"},'
    b'"location":{"lat":59.9,"lon":10.7},"escalation_level":1,"acknowledged_by":"kari.s","resolved_by":null,'
    b'"note":null}'
)


def escalated_then_acknowledged() -> Change:
    svc = AlertService(registry(), Timeouts())
    svc.apply([open_intent(AlertKind.FALL, T0, device="d-1-fall", event_id="e-1",
                           location={"lat": 59.9, "lon": 10.7})])
    [step] = svc.due(T0 + timedelta(seconds=60))
    return svc.acknowledge(step.alert.alert_id, "kari.s", T0 + timedelta(seconds=70), "på vei \ud800")


def test_alerts_survive_the_round_trip_through_the_record_and_the_journal() -> None:
    change = escalated_then_acknowledged()
    item = item_of(change)
    assert decode(encode(item)) == item
    assert Alert.from_record(change.alert.record()) == change.alert


def test_a_journal_written_by_the_previous_version_still_replays(tmp_path: Path) -> None:
    """An upgrade with changes still in the journal: they are read as they were made."""
    assert decode(PREVIOUS_RECORD) == item_of(escalated_then_acknowledged())
    log = LocalLog(tmp_path / "alerts.log", "alerts")  # the journal's file, as the previous version left it
    log.append([PREVIOUS_RECORD])
    log.close()
    [(alert, steps)] = Journal(tmp_path).read()
    assert (alert.state, alert.teams, alert.transition_count) == ("acknowledged", ("east", "alarm-centre"), 3)
    assert [(s.actor, s.note) for s in steps] == [("kari.s", "på vei \ud800")]


def test_handhelds_get_the_same_topics_and_payload_bytes_as_before() -> None:
    change = escalated_then_acknowledged()
    assert change.alert.wire_payload() == PREVIOUS_PAYLOAD

    async def publish_unconnected() -> tuple[int, int]:
        publisher = AlertPublisher("127.0.0.1", 1, prefix="trygg/v1")  # never connects: messages are kept
        publisher.start()
        return publisher.publish(change), publisher.pending()

    assert asyncio.run(publish_unconnected()) == (2, 2)
    publisher = AlertPublisher("127.0.0.1", 1, prefix="trygg/v1")
    assert [publisher.topic(team, change.alert.alert_id) for team in change.teams] == [
        "trygg/v1/teams/east/alerts/a-1cff430e1aa8691f1d75",
        "trygg/v1/teams/alarm-centre/alerts/a-1cff430e1aa8691f1d75",
    ]


def test_rows_wait_in_order_while_the_database_is_down_and_are_written_when_it_returns(tmp_path: Path) -> None:
    store = FakeStore()
    store.down.set()
    journal = Journal(tmp_path)
    writer = AlertWriter(store, journal, retry_s=0.02)
    writer.start()
    items = changes(5)
    for item in items:
        writer.put(item)  # returns at once although the database is away
    assert not writer.wait_idle(0.2)
    assert not writer.database_ok and store.alerts == []
    assert [rec.alert_id for rec, _ in journal.read()] == [rec.alert_id for rec, _ in items]

    store.down.clear()
    assert writer.wait_idle(5)
    assert [a.alert_id for a in store.alerts] == [rec.alert_id for rec, _ in items]
    assert len(store.steps) == 5
    assert writer.database_ok and writer.backlog == 0
    assert journal.read() == []  # committed: the journal is empty again
    assert writer.stop() == 0


def test_after_a_crash_the_journal_holds_what_the_database_did_not_get(tmp_path: Path) -> None:
    store = FakeStore()
    store.down.set()
    writer = AlertWriter(store, Journal(tmp_path), retry_s=60)
    writer.start()
    items = changes(3)
    for item in items:
        writer.put(item)
    writer.wait_idle(0.2)
    assert writer.stop(timeout=1) == 3  # "crash": nothing reached the database

    with Journal(tmp_path).path.open("ab") as fh:
        fh.write(frame(b'{"a": {"alert_id": "torn", "more": "never written"}}')[:25])  # a write cut short
    again = Journal(tmp_path).read()
    assert again == items
    fresh = FakeStore()
    writer = AlertWriter(fresh, Journal(tmp_path), retry_s=0.02, unwritten=again)
    writer.start()
    assert writer.wait_idle(5)
    assert [a.alert_id for a in fresh.alerts] == [rec.alert_id for rec, _ in items]
    writer.stop()


def test_the_writer_survives_a_change_it_cannot_journal_and_keeps_storing(tmp_path: Path) -> None:
    """A staff note with a lone UTF-16 surrogate (JSON allows "\\ud800") once ended the
    writer's thread: no alert change was stored again. Now such a change is journaled
    (escaped) and stored; one JSON cannot hold at all is stored without the journal; and
    every later change is stored too."""
    store = FakeStore()
    store.down.set()
    journal = Journal(tmp_path)
    writer = AlertWriter(store, journal, retry_s=0.02)
    writer.start()
    first, second, third = changes(3)
    odd = (dataclasses.replace(first[0], note="tatt \ud800"), first[1])
    unjournaled = (dataclasses.replace(second[0], detail={"x": object()}), second[1])
    writer.put(odd)
    writer.put(unjournaled)
    assert not writer.wait_idle(0.2)
    assert journal.read() == [odd], "the odd note is kept in the journal as it was"
    store.down.clear()
    assert writer.wait_idle(5)
    writer.put(third)
    assert writer.wait_idle(5)
    assert [a.alert_id for a in store.alerts] == [odd[0].alert_id, second[0].alert_id, third[0].alert_id]
    assert writer._thread.is_alive()
    assert writer.stop() == 0


class FailsOnce(FakeStore):
    def write(self, alerts: Sequence[Alert], transitions: Sequence[Transition]) -> None:
        if not self.attempts:
            self.attempts += 1
            raise RuntimeError("something nobody expected")
        super().write(alerts, transitions)


def test_the_writer_thread_survives_an_unexpected_error_and_retries(tmp_path: Path) -> None:
    store = FailsOnce()
    errors = metrics.WRITER_ERRORS._value.get()
    writer = AlertWriter(store, Journal(tmp_path), retry_s=0.02)
    writer.start()
    items = changes(2)
    for item in items:
        writer.put(item)
    assert writer.wait_idle(5)
    assert [a.alert_id for a in store.alerts] == [rec.alert_id for rec, _ in items]
    assert metrics.WRITER_ERRORS._value.get() == errors + 1
    assert writer._thread.is_alive()
    writer.stop()


def test_the_journal_of_the_previous_version_is_read_once_and_removed(tmp_path: Path) -> None:
    """An upgrade while PostgreSQL is down: the JSON-lines journal left behind (with a
    torn last line) is restored and written, then removed."""
    items = changes(3)
    legacy = tmp_path / "alerts.journal"
    legacy.write_bytes(b"".join(json.dumps(json.loads(encode(i))).encode() + b"\n" for i in items[:2])
                       + b'{"a": {"alert_id": "torn')
    journal = Journal(tmp_path)
    journal.append([items[2]])
    again = journal.read()
    assert again == items
    store = FakeStore()
    writer = AlertWriter(store, journal, retry_s=0.02, unwritten=again)
    writer.start()
    assert writer.wait_idle(5)
    assert [a.alert_id for a in store.alerts] == [rec.alert_id for rec, _ in items]
    writer.stop()
    assert not legacy.exists()
    assert Journal(tmp_path).read() == []
