"""The durable local log (storage/local_log.py) on real files: a full disk (a small tmpfs)
leaves no partial record and the log works again once there is room; a torn tail is cut
so the next record is read; a corrupt record is skipped, reported, and hides nothing
after it; a failed fsync does not count a batch as durable."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.local_log import BEGIN, SKIPPED, LocalLog, LocalLogError, degraded, frame, scan
from tests.fix_disk import SmallDisk, fill


def payloads(log: LocalLog, start: int | None = None) -> list[bytes]:
    return [p for p, _ in log.records(start)]


def reopened(log: LocalLog) -> LocalLog:
    log.close()
    return LocalLog(log.path, log.label)


def skipped(label: str) -> float:
    return SKIPPED.labels(label)._value.get()


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[LocalLog]]:
    logs: list[LocalLog] = []
    yield logs
    for log in logs:
        log.close()
    assert degraded() == {}, "a log left degraded"


def test_a_full_disk_raises_leaves_no_partial_record_and_the_log_works_once_there_is_room(
        tmp_path: Path, small_disk: SmallDisk, opened: list[LocalLog]) -> None:
    disk = small_disk(tmp_path / "disk", "256k")
    ballast = fill(disk, limit=64 * 1024)
    log = LocalLog(disk / "spool.log", "spool")
    opened.append(log)
    batch = [f'{{"n": {n}, "pad": "{"x" * 900}"}}'.encode() for n in range(20)]  # ~18 KB a batch
    appended: list[bytes] = []
    with pytest.raises(LocalLogError) as failure:
        for _ in range(100):
            log.append(batch)
            appended.extend(batch)
    assert failure.value.reason == "disk full" and failure.value.errno == errno.ENOSPC
    assert len(appended) > 100, "the disk filled too early to tell"
    assert log.degraded == "disk full" and degraded() == {"spool": "disk full"}
    assert os.path.getsize(log.path) == log.durable, "a partial record stayed in the file"
    assert payloads(reopened(log)) == appended
    log = opened[0] = LocalLog(disk / "spool.log", "spool")

    ballast.unlink()  # room again
    log.append(batch[:3])
    assert log.degraded is None and degraded() == {}
    assert payloads(log) == appended + batch[:3]
    assert payloads(reopened(log)) == appended + batch[:3]


def test_a_checkpoint_on_a_full_disk_raises_and_emptying_the_log_still_frees_the_space(
        tmp_path: Path, small_disk: SmallDisk, opened: list[LocalLog]) -> None:
    disk = small_disk(tmp_path / "disk", "256k")
    log = LocalLog(disk / "spool.log", "spool")
    opened.append(log)
    log.append([b"r" * 1000] * 50)
    first_end = next(iter(log.records()))[1]
    fill(disk)
    with pytest.raises(LocalLogError):
        log.mark_consumed(first_end)  # the checkpoint file needs a block the disk has not
    assert log.consumed == first_end and log.pending_bytes < log.durable - BEGIN
    log.mark_consumed(log.durable)  # all consumed: emptied, no block needed
    assert os.path.getsize(log.path) == 0 and log.pending_bytes == 0
    (disk / "ballast").unlink()
    log.append([b"new"])
    assert log.degraded is None
    assert payloads(reopened(log)) == [b"new"]


def test_a_torn_tail_is_cut_at_open_and_the_next_record_is_read(tmp_path: Path, opened: list[LocalLog]) -> None:
    log = LocalLog(tmp_path / "a.log", "alerts")
    log.append([b"one", b"two"])
    log.close()
    with (tmp_path / "a.log").open("ab") as fh:
        fh.write(frame(b"three, never fsync'ed")[:15])  # a crash in the middle of a write
    before = skipped("alerts")
    log = LocalLog(tmp_path / "a.log", "alerts")
    opened.append(log)
    assert skipped("alerts") == before + 1, "the torn tail was not reported"
    log.append([b"four"])
    assert payloads(log) == [b"one", b"two", b"four"]
    assert payloads(reopened(log)) == [b"one", b"two", b"four"]


def test_a_corrupt_record_in_the_middle_is_skipped_reported_and_hides_nothing_after_it(
        tmp_path: Path, opened: list[LocalLog]) -> None:
    log = LocalLog(tmp_path / "a.log", "audit")
    opened.append(log)
    records = [f"record {n}".encode() * 10 for n in range(6)]
    log.append(records)
    ends = [end for _, end in log.records()]
    data = bytearray((tmp_path / "a.log").read_bytes())
    data[ends[1] - 5] ^= 0xFF  # a bit flip in the payload of record 1
    data[ends[2] + 5] = 0xFF  # a length of ~4 GB in the header of record 3
    (tmp_path / "a.log").write_bytes(bytes(data))
    before = skipped("audit")
    assert payloads(log) == [records[0], records[2], records[4], records[5]]
    assert skipped("audit") == before + 2
    assert payloads(reopened(log)) == [records[0], records[2], records[4], records[5]]
    opened[0] = LocalLog(log.path, "audit")


def test_a_failed_fsync_keeps_nothing_of_the_batch_and_counts_nothing_as_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[LocalLog]) -> None:
    log = LocalLog(tmp_path / "a.log", "spool")
    opened.append(log)
    durable = log.append([b"kept"])

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(LocalLogError) as failure:
        log.append([b"lost-1", b"lost-2"])
    assert failure.value.reason == "disk I/O error"
    assert log.durable == log.written == durable == os.path.getsize(log.path)
    assert log.degraded == "disk I/O error" and degraded() == {"spool": "disk I/O error"}
    monkeypatch.undo()
    log.append([b"after"])
    assert log.degraded is None
    assert payloads(reopened(log)) == [b"kept", b"after"]
    opened[0] = LocalLog(log.path, "spool")


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    opened: list[LocalLog]) -> None:
    real_write = os.write

    def a_few_bytes_at_a_time(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data)[:7])

    log = LocalLog(tmp_path / "a.log", "spool")
    opened.append(log)
    monkeypatch.setattr(os, "write", a_few_bytes_at_a_time)
    log.append([b"x" * 100, b"y" * 50])
    monkeypatch.undo()
    assert payloads(reopened(log)) == [b"x" * 100, b"y" * 50]
    opened[0] = LocalLog(log.path, "spool")


def test_write_and_sync_apart_and_a_failed_sync_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             opened: list[LocalLog]) -> None:
    log = LocalLog(tmp_path / "a.log", "audit")
    opened.append(log)
    written = log.write([b"a"])
    assert (log.durable, log.written) == (BEGIN, written)
    assert payloads(log) == [], "not durable: not read"
    assert log.sync() == written
    log.write([b"b"])
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(LocalLogError):
        log.sync()
    monkeypatch.undo()
    assert log.cut_back() > 0
    assert os.path.getsize(log.path) == written
    log.append([b"c"])
    assert payloads(log) == [b"a", b"c"]


def test_the_checkpoint_survives_a_restart_and_an_emptied_log_ignores_it(tmp_path: Path,
                                                                         opened: list[LocalLog]) -> None:
    log = LocalLog(tmp_path / "s.log", "spool")
    log.append([b"1", b"2", b"3"])
    first = next(iter(log.records()))[1]
    log.mark_consumed(first)
    log = reopened(log)
    opened.append(log)
    assert payloads(log) == [b"2", b"3"]
    log.mark_consumed(log.durable)
    assert os.path.getsize(log.path) == 0 and payloads(log) == []
    log.append([b"4"])  # the old checkpoint's offset lies inside this new content
    assert payloads(reopened(log)) == [b"4"]
    opened[0] = LocalLog(log.path, "spool")


def test_a_lock_is_exclusive(tmp_path: Path, opened: list[LocalLog]) -> None:
    mine = LocalLog(tmp_path / "j.log", "audit", lock=True)
    opened.append(mine)
    with pytest.raises(LocalLogError):
        LocalLog(tmp_path / "j.log", "audit", lock=True)
    with pytest.raises(FileNotFoundError):
        LocalLog(tmp_path / "gone.log", "audit", create=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=8), st.binary(max_size=80),
       st.integers(min_value=0, max_value=8))
def test_garbage_anywhere_never_hides_the_records_around_it(tmp_path_factory: pytest.TempPathFactory,
                                                           records: list[bytes], garbage: bytes, at: int) -> None:
    """Arbitrary bytes between records (a torn write glued to the next one, a foreign
    write) are skipped; every whole record is read."""
    at = min(at, len(records))
    data = b"".join(frame(r) for r in records[:at]) + garbage + b"".join(frame(r) for r in records[at:])
    path = tmp_path_factory.mktemp("g") / "g.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        found = [p for p, _ in scan(fd, 0, len(data))]
    finally:
        os.close(fd)
    if b"\xffTRG" in garbage:  # a header inside the garbage may swallow what follows it: not a torn write
        return
    assert found == records
