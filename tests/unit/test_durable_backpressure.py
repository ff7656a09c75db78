"""Back-pressure of a durable writer: `put` never blocks the receiving loop; it says when
the queue is full, and `on_room` says when receiving may go on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway import DurableWriter, Pending, Spool
from storage import EventStore
from trygg.contract import Event, EventType


def _pending(n: int, start: int) -> Pending:
    now = datetime.now(UTC)
    return Pending([Event("d-1", f"e-{start + i}", EventType.HEARTBEAT, now, now, {}) for i in range(n)],
                   list(range(start + 1, start + n + 1)), 1)


def test_full_queue_is_reported_and_room_announced_once_half_drained(tmp_path: Path) -> None:
    rooms: list[int] = []
    writer = DurableWriter(EventStore("postgresql://127.0.0.1:9/none"), Spool(tmp_path / "spool"),
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
