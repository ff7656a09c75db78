"""The audit journal on disk, without a database: durable appends in groups, a failed
write leaves nothing half-written, torn records are ignored, a journal somebody still
holds is never taken over, and one of the previous version (JSON lines) is adopted."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dashboard.audit import AuditLog
from dashboard.audit_journal import AuditJournal, adopt_orphans
from dashboard.authz import Principal
from dashboard.errors import AuditJournalError
from storage.audit_store import AuditRow
from storage.local_log import BEGIN, degraded, frame, scan
from trygg.contract import Role

OLA = Principal("ola", Role.STAFF, frozenset({"east"}))


def rows_in(path: Path) -> list[AuditRow]:
    """The rows in a journal file, as the next dashboard would read them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [AuditRow.from_json(p) for p, _ in scan(fd, BEGIN, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


def row(resident_id: str) -> AuditRow:
    return AuditRow(uuid.uuid4(), datetime.now(UTC), "ola", "staff", resident_id, f"GET /x/{resident_id}")


def test_rows_are_in_the_file_when_record_returns_and_come_together_in_few_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    async def main() -> None:
        log = AuditLog(tmp_path, "postgresql://nowhere")
        log.open()
        monkeypatch.setattr(os, "fsync", counting_fsync)
        counts = await asyncio.gather(*(log.record(OLA, [f"r-{n}"], f"GET /api/residents/r-{n}/status")
                                        for n in range(50)))
        assert counts == [1] * 50
        rows = rows_in(log.journal.path)
        assert {r.resident_id for r in rows} == {f"r-{n}" for n in range(50)} and len(rows) == 50
        assert 1 <= len(fsyncs) < 10, "rows that come together share an fsync"
        assert log.pending_bytes == log.journal.size - log.journal.begin > 0
        log.journal.close(remove=True)

    asyncio.run(main())


def test_text_postgresql_would_refuse_is_made_safe(tmp_path: Path) -> None:
    async def main() -> list[AuditRow]:
        log = AuditLog(tmp_path, "postgresql://nowhere")
        log.open()
        await log.record(OLA, ["r-1"], "GET /api/residents/r\x00-1/status\udcff")
        rows = rows_in(log.journal.path)
        log.journal.close(remove=True)
        return rows

    (only,) = asyncio.run(main())
    assert "\x00" not in only.action and "\udcff" not in only.action
    assert only.action.startswith("GET /api/residents/r")


def test_a_failed_write_keeps_nothing_of_its_batch_and_the_next_one_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = AuditJournal(tmp_path)
    first = row("x")
    size = journal.append([first])

    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes | memoryview) -> int:
        written = real_write(fd, bytes(data)[: len(data) // 2])
        monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "No space left")))
        return written

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(AuditJournalError):
        journal.append([row("lost-1"), row("lost-2")])
    assert degraded() == {"audit": "disk full"}
    monkeypatch.undo()
    assert os.path.getsize(journal.path) == size and rows_in(journal.path) == [first]
    later = row("y")
    assert journal.append([later]) > size
    assert rows_in(journal.path) == [first, later]
    assert degraded() == {}, "a write that works again clears the degraded state"
    journal.close(remove=True)


def test_truncate_only_when_nothing_came_in_between(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path)
    size = journal.append([row("a")])
    journal.append([row("b")])
    assert not journal.truncate(size)
    assert journal.truncate(journal.size)
    assert journal.size == journal.begin and journal.path.stat().st_size == 0
    c = row("c")
    journal.append([c])
    journal.close(remove=False)
    assert rows_in(journal.path) == [c]


def test_torn_and_foreign_records_are_left_out(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path)
    good = row("r-1")
    journal.append([good])
    with journal.path.open("ab") as fh:
        fh.write(frame(b"not json") + frame(row("r-2").to_json())[:40])
    journal.close(remove=False)
    with adopt_orphans(tmp_path) as (orphan,):
        batch = orphan.read()
    assert batch.rows == [good] and batch.bad == 1


def test_a_journal_in_use_is_never_adopted(tmp_path: Path) -> None:
    mine = AuditJournal(tmp_path)
    other = AuditJournal(tmp_path)
    other.append([row("x")])
    left = tmp_path / "journal-left-by-a-crash.log"
    left.write_bytes(b"")
    with adopt_orphans(tmp_path, mine.path) as orphans:
        assert [o.path for o in orphans] == [left]
        with adopt_orphans(tmp_path, other.path) as meanwhile:
            assert [o.path for o in meanwhile] == [], "locked by the first adopter; mine is held by me"
        orphans[0].remove()
    other.close(remove=False)
    with adopt_orphans(tmp_path, mine.path) as orphans:
        assert [o.path for o in orphans] == [other.path]
        assert [r.resident_id for r in orphans[0].read().rows] == ["x"]
    mine.close(remove=True)


def test_a_journal_of_the_previous_version_is_adopted(tmp_path: Path) -> None:
    """JSON lines, the last one torn by a crash: its whole rows are read, then it is
    removed like any other orphan."""
    rows = [row("r-1"), row("r-2")]
    old = tmp_path / "journal-0123456789abcdef.jsonl"
    old.write_bytes(b"".join(r.to_json() + b"\n" for r in rows) + rows[0].to_json()[:30])
    mine = AuditJournal(tmp_path)
    with adopt_orphans(tmp_path, mine.path) as (orphan,):
        assert orphan.path == old
        assert orphan.read().rows == rows
        orphan.remove()
    assert not old.exists()
    mine.close(remove=True)
    assert list(tmp_path.iterdir()) == []


def test_record_before_open_refuses(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "postgresql://nowhere")
    with pytest.raises(AuditJournalError):
        asyncio.run(log.record(OLA, ["r-1"], "GET /x"))
    assert asyncio.run(log.record(OLA, [], "GET /x")) == 0


def test_a_stream_row_is_in_the_file_at_once_and_a_failed_fsync_keeps_nothing_unsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        log = AuditLog(tmp_path, "postgresql://nowhere")
        log.open()
        count, synced = log.write(OLA, ["r-1"], "GET /api/alerts/stream", wait=False)
        assert (count, synced) == (1, None)
        assert [r.resident_id for r in rows_in(log.journal.path)] == ["r-1"]  # before any await: a crash keeps it
        await log.record(OLA, ["r-2"], "GET /api/residents/r-2/status")  # the shared fsync
        assert log.journal.size == log.journal.written == log.journal.path.stat().st_size

        def failing_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(AuditJournalError):
            await log.record(OLA, ["r-3"], "GET /api/residents/r-3/status")
        monkeypatch.undo()
        assert [r.resident_id for r in rows_in(log.journal.path)] == ["r-1", "r-2"], "cut back to what was fsync'ed"
        assert log.journal.path.stat().st_size == log.journal.size
        await log.record(OLA, ["r-4"], "GET /api/residents/r-4/status")
        assert [r.resident_id for r in rows_in(log.journal.path)] == ["r-1", "r-2", "r-4"]
        log.journal.close(remove=True)

    asyncio.run(main())
