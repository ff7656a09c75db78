"""A re-used event id at the store, against a real PostgreSQL (docs/ingest.md "Re-used
ids"): a device whose counter reset sends `e-1` again for a new press. It is a different
event and must be stored, under `rekeyed_id`; a re-send — same id, type and time — is
still stored once, and so is a re-send of the re-keyed event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from storage import EventStore, Pool
from trygg.contract import Event, EventType, rekeyed_id

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=123456)


def press(event_id: str, ts: datetime, kind: EventType = EventType.ALARM_BUTTON) -> Event:
    return Event("d-1-alarm", event_id, kind, ts, ts + timedelta(milliseconds=40), {}, "r-1")


def rows(url: str) -> list[tuple[str, str, datetime]]:
    with psycopg.connect(url) as conn:
        return [(str(e), str(t), ts) for e, t, ts in conn.execute(
            "SELECT event_id, type, ts FROM trygg.events ORDER BY seq")]


@pytest.fixture
def store(pool: Pool) -> Iterator[EventStore]:
    s = EventStore(pool)
    yield s
    s.close()


def test_a_new_event_with_a_used_id_and_another_time_is_stored_under_its_rekeyed_id(
        store: EventStore, database: str) -> None:
    first, reset = NOW - timedelta(hours=3), NOW
    assert store.write([press("e-1", first)]) == 1
    assert store.write([press("e-1", reset)]) == 1, "the reset device's press was dropped as a re-send"
    new_id = rekeyed_id("e-1", "alarm.button", reset)
    assert rows(database) == [("e-1", "alarm.button", first), (new_id, "alarm.button", reset)]


def test_another_type_under_a_used_id_is_a_new_event_too(store: EventStore, database: str) -> None:
    store.write([press("e-1", NOW)])
    assert store.write([press("e-1", NOW, EventType.ALARM_CANCEL)]) == 1
    assert [r[:2] for r in rows(database)] == [
        ("e-1", "alarm.button"), (rekeyed_id("e-1", "alarm.cancel", NOW), "alarm.cancel")]


def test_a_resend_of_the_rekeyed_event_is_stored_once(store: EventStore, database: str) -> None:
    store.write([press("e-1", NOW - timedelta(hours=3))])
    store.write([press("e-1", NOW)])
    assert store.write([press("e-1", NOW)]) == 0
    assert store.write([press("e-1", NOW), press("e-1", NOW - timedelta(hours=3))]) == 0
    assert len(rows(database)) == 2


def test_a_plain_resend_is_stored_once(store: EventStore, database: str) -> None:
    store.write([press("e-1", NOW)])
    # the same instant written with another offset is the same device time
    oslo = NOW.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+01:00").tzinfo)
    assert store.write([press("e-1", NOW)]) == 0
    assert store.write([press("e-1", oslo), press("e-2", NOW)]) == 1
    assert [r[0] for r in rows(database)] == ["e-1", "e-2"]


def test_inside_one_batch_a_reused_id_is_kept_and_a_resend_dropped(store: EventStore, database: str) -> None:
    early, late = NOW - timedelta(minutes=5), NOW
    batch = [press("e-1", early), press("e-1", early), press("e-1", late), press("e-1", late)]
    assert store.write(batch) == 2
    assert rows(database) == [("e-1", "alarm.button", early),
                              (rekeyed_id("e-1", "alarm.button", late), "alarm.button", late)]
    assert batch[2].event_id == "e-1", "the caller's event (the processors may hold it) was changed"


def test_keys_stored_before_the_fingerprint_existed_compare_as_resends(store: EventStore, database: str) -> None:
    store.write([press("e-1", NOW - timedelta(hours=3))])
    with psycopg.connect(database) as conn:  # as migration 0009 leaves an old key
        conn.execute("UPDATE trygg.event_keys SET type = NULL, ts = NULL")
    assert store.write([press("e-1", NOW)]) == 0
    assert len(rows(database)) == 1


def test_a_batch_with_a_reused_id_still_stores_the_rest_in_order(store: EventStore, database: str) -> None:
    store.write([press("e-1", NOW - timedelta(hours=3))])
    batch = [press(f"e-{i}", NOW + timedelta(seconds=i)) for i in range(5)]  # e-1 collides
    assert store.write(batch) == 5
    assert store.write(batch) == 0
    ids = [r[0] for r in rows(database)]
    assert sorted(ids[1:]) == sorted(["e-0", rekeyed_id("e-1", "alarm.button", NOW + timedelta(seconds=1)),
                                      "e-2", "e-3", "e-4"])


def test_an_id_still_taken_after_rekeying_is_dead_lettered_not_dropped(
        store: EventStore, database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a crafted id can take the re-keyed id first (here with one round allowed):
    the event is kept as a dead letter with the reason, never lost silently."""
    monkeypatch.setattr("storage.events.REKEY_ROUNDS", 1)
    taken = rekeyed_id("e-1", "alarm.button", NOW)
    store.write([press("e-1", NOW - timedelta(hours=2)), press(taken, NOW - timedelta(hours=1))])
    assert store.write([press("e-1", NOW)]) == 0
    with psycopg.connect(database) as conn:
        dead = conn.execute("SELECT topic, reason, detail FROM trygg.dead_letters").fetchall()
    assert dead == [("devices/d-1-alarm/events", "storage_refused",
                     f"event id {taken} is still taken by another event after re-keying")]
