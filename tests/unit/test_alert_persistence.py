"""Alert rows on their way to PostgreSQL: kept in order while the database is away,
journaled so a crash loses nothing, and never holding up the caller. A fake store stands
in for PostgreSQL; the real one is in tests/test_alerts_*.py."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts import AlertService, AlertWriter, Journal, Timeouts, from_record, to_record
from alerts.journal import decode, encode
from alerts.persistence import item_of
from storage.alerts_store import AlertRecord, AlertStore, TransitionRecord
from storage.errors import DatabaseUnavailable
from tests.unit.test_alert_service import open_intent, registry
from trygg.contract import AlertKind

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


class FakeStore(AlertStore):
    """Commits in memory; `down` makes it refuse like an unreachable server."""

    def __init__(self) -> None:
        super().__init__("postgresql://unused")
        self.down = threading.Event()
        self.alerts: list[AlertRecord] = []
        self.steps: list[TransitionRecord] = []
        self.attempts = 0

    def write(self, alerts: Sequence[AlertRecord], transitions: Sequence[TransitionRecord]) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise DatabaseUnavailable("connection refused")
        self.alerts.extend(alerts)
        self.steps.extend(transitions)

    def close(self) -> None:
        pass


def changes(n: int) -> list[tuple[AlertRecord, tuple[TransitionRecord, ...]]]:
    svc = AlertService(registry(), Timeouts())
    out = []
    for i in range(n):
        [change] = svc.apply([open_intent(AlertKind.ALARM, T0 + timedelta(seconds=i), resident=f"r-{i}",
                                          device=f"d-{i}")])
        out.append(item_of(change))
    return out


def test_alert_records_survive_the_round_trip_through_the_model_and_the_journal() -> None:
    svc = AlertService(registry(), Timeouts())
    svc.apply([open_intent(AlertKind.FALL, T0, device="d-1-fall", location={"lat": 59.9, "lon": 10.7})])
    [step] = svc.due(T0 + timedelta(seconds=60))
    item = item_of(step)
    assert decode(encode(item)) == item
    alert = from_record(item[0])
    assert alert == step.alert
    assert to_record(alert) == item[0]
    assert alert.to_wire() == step.wire


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

    with (tmp_path / "alerts.journal").open("ab") as fh:
        fh.write(b'{"a": {"alert_id": "torn')  # a write cut short
    again = Journal(tmp_path).read()
    assert again == items
    fresh = FakeStore()
    writer = AlertWriter(fresh, Journal(tmp_path), retry_s=0.02, unwritten=again)
    writer.start()
    assert writer.wait_idle(5)
    assert [a.alert_id for a in fresh.alerts] == [rec.alert_id for rec, _ in items]
    writer.stop()
