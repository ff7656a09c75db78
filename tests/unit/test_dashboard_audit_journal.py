"""The audit journal on disk, without a database: durable appends in groups, a failed
write leaves nothing half-written, torn lines are ignored, and a journal somebody still
holds is never taken over."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dashboard.audit import AuditLog
from dashboard.audit_journal import AuditJournal, adopt_orphans, parse
from dashboard.authz import Principal
from dashboard.errors import AuditJournalError
from trygg.contract import Role

OLA = Principal("ola", Role.STAFF, frozenset({"east"}))


def journal_lines(directory: Path) -> list[bytes]:
    return [line for path in sorted(directory.iterdir()) for line in path.read_bytes().splitlines()]


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
        lines = log.journal.path.read_bytes().splitlines()
        assert len(lines) == 50
        assert {parse(line + b"\n", 0).rows[0].resident_id for line in lines} == {f"r-{n}" for n in range(50)}
        assert 1 <= len(fsyncs) < 10, "rows that come together share an fsync"
        assert log.pending_bytes == log.journal.size > 0
        log.journal.close(remove=True)

    asyncio.run(main())


def test_text_postgresql_would_refuse_is_made_safe(tmp_path: Path) -> None:
    async def main() -> bytes:
        log = AuditLog(tmp_path, "postgresql://nowhere")
        log.open()
        await log.record(OLA, ["r-1"], "GET /api/residents/r\x00-1/status\udcff")
        data = log.journal.path.read_bytes()
        log.journal.close(remove=True)
        return data

    (row,) = parse(asyncio.run(main()), 0).rows
    assert "\x00" not in row.action and "\udcff" not in row.action
    assert row.action.startswith("GET /api/residents/r")


def test_a_failed_write_keeps_nothing_of_its_batch_and_the_next_one_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = AuditJournal(tmp_path)
    first = b'{"id":"x"}\n'
    assert journal.append(first) == len(first)

    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes | memoryview) -> int:
        written = real_write(fd, bytes(data)[: len(data) // 2])
        monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "No space left")))
        return written

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(AuditJournalError):
        journal.append(b'{"id":"lost-1"}\n{"id":"lost-2"}\n')
    monkeypatch.undo()
    assert journal.path.read_bytes() == first
    assert journal.append(b'{"id":"y"}\n') == len(first) + 11
    assert journal.path.read_bytes() == first + b'{"id":"y"}\n'
    journal.close(remove=True)


def test_truncate_only_when_nothing_came_in_between(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path)
    size = journal.append(b"a\n")
    journal.append(b"b\n")
    assert not journal.truncate(size)
    assert journal.truncate(journal.size)
    assert journal.size == 0 and journal.path.stat().st_size == 0
    assert journal.append(b"c\n") == 2
    journal.close(remove=False)
    assert journal.path.read_bytes() == b"c\n"


def test_torn_and_foreign_lines_are_left_out() -> None:
    good = (b'{"id":"0d1f4c9e-6a43-4c0e-9a39-1234567890ab","at":"2026-11-22T13:03:07+00:00",'
            b'"actor":"ola","role":"staff","resident_id":"r-1","action":"GET /x"}\n')
    batch = parse(good + b"not json\n" + good.replace(b"r-1", b"r-2")[:40], 100)
    assert [r.resident_id for r in batch.rows] == ["r-1"]
    assert batch.bad == 1
    assert batch.end == 100 + len(good) + len(b"not json\n")


def test_a_journal_in_use_is_never_adopted(tmp_path: Path) -> None:
    mine = AuditJournal(tmp_path)
    other = AuditJournal(tmp_path)
    other.append(b"x\n")
    left = tmp_path / "journal-left-by-a-crash.jsonl"
    left.write_bytes(b"y\n")
    with adopt_orphans(tmp_path, mine.path) as orphans:
        assert [o.path for o in orphans] == [left]
        with adopt_orphans(tmp_path, other.path) as meanwhile:
            assert [o.path for o in meanwhile] == [], "locked by the first adopter; mine is held by me"
        orphans[0].remove()
    other.close(remove=False)
    with adopt_orphans(tmp_path, mine.path) as orphans:
        assert [o.path for o in orphans] == [other.path]
        assert orphans[0].read().end == 2
    mine.close(remove=True)


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
        assert b'"r-1"' in log.journal.path.read_bytes()  # before any await: a crash keeps it
        await log.record(OLA, ["r-2"], "GET /api/residents/r-2/status")  # the shared fsync
        assert log.journal.size == log.journal.written == len(log.journal.path.read_bytes())

        def failing_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(AuditJournalError):
            await log.record(OLA, ["r-3"], "GET /api/residents/r-3/status")
        monkeypatch.undo()
        data = log.journal.path.read_bytes()
        assert b'"r-3"' not in data and data.count(b"\n") == 2  # cut back to what was fsync'ed
        await log.record(OLA, ["r-4"], "GET /api/residents/r-4/status")
        assert [parse(line + b"\n", 0).rows[0].resident_id for line in log.journal.path.read_bytes().splitlines()
                ] == ["r-1", "r-2", "r-4"]
        log.journal.close(remove=True)

    asyncio.run(main())
