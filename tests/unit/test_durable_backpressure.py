"""A durable writer without a database: `put` never blocks the receiving loop, says when
the queue is full, and `on_room` says when receiving may go on; its thread survives any
error, and nothing is acknowledged before it is durable (`oldest_pending_age` tells how
long the oldest message has waited)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway import DurableWriter, Pending, Spool, SpoolError, metrics
from gateway.spool import Record
from storage import EventStore
from tests.helpers import no_database
from trygg.contract import Event, EventType


def _pending(n: int, start: int) -> Pending:
    now = datetime.now(UTC)
    return Pending([Event("d-1", f"e-{start + i}", EventType.HEARTBEAT, now, now, {}) for i in range(n)],
                   list(range(start + 1, start + n + 1)), 1)


def test_full_queue_is_reported_and_room_announced_once_half_drained(tmp_path: Path) -> None:
    rooms: list[int] = []
    writer = DurableWriter(EventStore(no_database()), Spool(tmp_path / "spool"),
                           lambda mids, generation: None, batch_max=100, batch_wait_s=0, queue_max=300,
                           on_room=lambda: rooms.append(1))  # never started: _take is driven here
    assert writer.put(_pending(200, 0)) is False
    assert writer.put(_pending(100, 200)) is True  # 300 queued: stop receiving
    assert writer.full
    assert writer.put(_pending(50, 300)) is True  # what was already read is still taken
    assert len(writer._take()) == 1 and rooms == []  # 150 left: not yet below half
    assert len(writer._take()) == 1 and rooms == [1]  # 50 left: receive again
    assert not writer.full
    writer._take()
    assert rooms == [1]


class FlakySpool(Spool):
    """A real spool whose first appends fail: `unexpected` with an error nobody planned
    for, then `full` times as a full disk does."""

    def __init__(self, directory: Path, unexpected: int = 0, full: int = 0) -> None:
        super().__init__(directory)
        self.unexpected = unexpected
        self.full = full

    def append(self, records: Sequence[Record]) -> None:
        if self.unexpected:
            self.unexpected -= 1
            raise RuntimeError("something nobody expected")
        if self.full:
            self.full -= 1
            raise SpoolError("cannot write the local log: [Errno 28] No space left on device")
        super().append(records)


def _writer(spool: Spool, acked: list[int]) -> DurableWriter:
    return DurableWriter(EventStore(no_database()), spool,
                         lambda mids, generation: acked.extend(mids), batch_wait_s=0, retry_s=0.05)


def test_the_writer_thread_survives_an_unexpected_error_and_acknowledges_only_once_durable(tmp_path: Path) -> None:
    acked: list[int] = []
    spool = FlakySpool(tmp_path / "spool", unexpected=2)
    writer = _writer(spool, acked)
    errors = metrics.WRITER_ERRORS._value.get()
    writer.start()
    try:
        writer.put(_pending(3, 0))
        assert writer.idle.wait(10)
        assert acked == [1, 2, 3]
        assert metrics.WRITER_ERRORS._value.get() == errors + 2
        assert writer._thread.is_alive()
        assert [r.event_id for r in _spooled(spool)] == ["e-0", "e-1", "e-2"]
    finally:
        writer.stop()


def test_oldest_pending_age_grows_while_nothing_is_durable_and_is_zero_once_acknowledged(tmp_path: Path) -> None:
    acked: list[int] = []
    spool = FlakySpool(tmp_path / "spool", full=6)  # ~0.3 s of a full disk
    writer = _writer(spool, acked)
    assert writer.oldest_pending_age() == 0.0
    writer.start()
    try:
        writer.put(_pending(2, 0))
        time.sleep(0.15)
        assert acked == [], "acknowledged before it was durable"
        assert writer.oldest_pending_age() >= 0.15
        assert writer.idle.wait(10)
        assert acked == [1, 2]
        assert writer.oldest_pending_age() == 0.0
    finally:
        writer.stop()


def _spooled(spool: Spool) -> list[Event]:
    got: list[Record] = []
    spool.replay(got.extend, 100)
    return [r for r in got if isinstance(r, Event)]
