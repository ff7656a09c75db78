"""The audit journal on disk: where an audit row becomes durable before the response,
whether or not PostgreSQL is up (docs/privacy.md "The audit log").

Each running dashboard keeps a durable local log (storage/local_log.py) of its own,
`<data dir>/audit/journal-<random>.log`, one row per record, and holds an exclusive
`flock` on it for its whole life. `write` puts rows in the file (a crash of Trygg no
longer loses them); `sync` fsyncs what was written (then a crash of the machine does not
either); `append` is both. A failed write leaves nothing of its rows; after a failed
`sync` the caller calls `cut_back`, which drops what no fsync covered. The flusher
(dashboard/audit.py) copies rows to trygg.audit_log and then `truncate`s the file. A file
whose lock nobody holds belongs to a dashboard that is gone (a crash, or a stop while
PostgreSQL was down): `adopt_orphans` hands it to whoever starts next, who stores its
rows and removes it; a JSON-lines journal of the previous version (`journal-*.jsonl`) is
adopted the same way. Every row carries its id, so a file replayed twice stores each row
once.

Threads: `write`, `cut_back` and `truncate` run on one thread (the event loop's, in
dashboard/audit.py), `sync` may run on another meanwhile (the journal's worker); `read`
of bytes below `size` may run anywhere, since those bytes change only by `truncate`,
which the reader itself calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dashboard.errors import AuditJournalError
from storage.audit_store import AuditRow
from storage.local_log import LocalLog, LocalLogError, LocalLogLocked, legacy_lines

PREFIX: Final = "journal-"
SUFFIX: Final = ".log"
LEGACY_SUFFIX: Final = ".jsonl"
LABEL: Final = "audit"


@dataclass
class Batch:
    """Rows read from a journal: `end` is the offset after the last record read; `bad`
    counts records that were not audit rows (skipped, never expected)."""

    rows: list[AuditRow]
    end: int
    bad: int = 0


def _read(log: LocalLog, start: int, end: int, max_rows: int | None = None) -> Batch:
    rows: list[AuditRow] = []
    bad = 0
    last = start
    for payload, after in log.records(start, end):
        try:
            rows.append(AuditRow.from_json(payload))
        except (ValueError, KeyError, TypeError):
            log.report(last, after, "not an audit row")
            bad += 1
        last = after
        if max_rows is not None and len(rows) + bad >= max_rows:
            return Batch(rows, last, bad)
    return Batch(rows, max(start, end), bad)


class AuditJournal:
    """This dashboard's own journal file, created empty and locked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{PREFIX}{uuid.uuid4().hex}{SUFFIX}"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._log = LocalLog(self.path, LABEL, lock=True)
        except (OSError, LocalLogError) as exc:
            raise AuditJournalError(f"cannot create the audit journal in {directory}: {exc}") from exc

    @property
    def begin(self) -> int:
        """Offset of the first row."""
        return self._log.begin

    @property
    def size(self) -> int:
        """Offset after the rows written and fsync'ed."""
        return self._log.durable

    @property
    def written(self) -> int:
        """Offset after the rows written (fsync'ed or not)."""
        return self._log.written

    def append(self, rows: Sequence[AuditRow]) -> int:
        """`write` and `sync` (nothing kept on an error); returns the new size."""
        try:
            return self._log.append(r.to_json() for r in rows)
        except LocalLogError as exc:
            raise AuditJournalError(f"cannot write the audit journal: {exc}") from exc

    def write(self, rows: Sequence[AuditRow]) -> int:
        """Write rows (not yet fsync'ed); returns the offset after them. On an error
        nothing of them is kept and AuditJournalError is raised."""
        try:
            return self._log.write(r.to_json() for r in rows)
        except LocalLogError as exc:
            raise AuditJournalError(f"cannot write the audit journal: {exc}") from exc

    def sync(self) -> int:
        """fsync what was written; returns the new size. On an error the caller cuts
        back (`cut_back`)."""
        try:
            return self._log.sync()
        except LocalLogError as exc:
            raise AuditJournalError(f"cannot write the audit journal: {exc}") from exc

    def cut_back(self) -> int:
        """Drop what was written but not fsync'ed (after a failed `sync`); returns the
        bytes dropped."""
        return self._log.cut_back()

    def read(self, start: int, end: int, max_rows: int | None = None) -> Batch:
        """The rows in [start, end), at most `max_rows` of them (`end` of the batch
        tells where the next read begins)."""
        try:
            return _read(self._log, start, end, max_rows)
        except OSError as exc:
            raise AuditJournalError(f"cannot read the audit journal {self.path}: {exc}") from exc

    def truncate(self, expected: int) -> bool:
        """Empty the file if it holds exactly `expected` (everything in it is in
        PostgreSQL). Not fsync'ed: if a crash undoes it, the rows are stored again, once."""
        return expected > self.begin and self._log.clear(expected)

    def close(self, *, remove: bool) -> None:
        """Release the file; `remove` when everything in it is in PostgreSQL (else the
        next dashboard to start adopts it)."""
        if remove:
            self._log.remove()
        else:
            self._log.close()


class Orphan:
    """A journal nobody holds, locked by us while we store its rows."""

    def __init__(self, path: Path, log: LocalLog | None, fd: int = -1) -> None:
        self.path = path
        self._log = log
        self._fd = fd  # a journal of the previous version: its lock

    def read(self) -> Batch:
        if self._log is not None:
            return _read(self._log, self._log.begin, self._log.durable)
        rows = list(legacy_lines(self.path, AuditRow.from_json, b'{"id":', LABEL))
        return Batch(rows, self.path.stat().st_size)

    def remove(self) -> None:
        """Its rows are in PostgreSQL."""
        if self._log is not None:
            self._log.remove()
        else:
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._log is not None:
            self._log.close()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _adopt(path: Path) -> Orphan | None:
    """Lock `path` unless a running dashboard holds it (or it is gone)."""
    if path.name.endswith(SUFFIX):
        try:
            return Orphan(path, LocalLog(path, LABEL, lock=True, create=False))
        except (FileNotFoundError, LocalLogLocked):  # stored and removed meanwhile, or in use
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return Orphan(path, None, fd)


@contextlib.contextmanager
def adopt_orphans(directory: Path, own: Path | None = None) -> Iterator[list[Orphan]]:
    """Lock every journal file in `directory` that no running dashboard holds, oldest
    first; the locks are released when the block ends."""
    found: list[tuple[float, Orphan]] = []
    try:
        try:
            paths = [p for p in directory.iterdir() if p.name.startswith(PREFIX)
                     and p.name.endswith((SUFFIX, LEGACY_SUFFIX))]
        except FileNotFoundError:
            paths = []
        for path in paths:
            if path == own:
                continue
            orphan = _adopt(path)
            if orphan is None:
                continue
            try:
                mtime = path.stat().st_mtime
            except OSError:
                mtime = 0.0
            found.append((mtime, orphan))
        found.sort(key=lambda item: item[0])
        yield [orphan for _, orphan in found]
    finally:
        for _, orphan in found:
            orphan.release()


__all__ = ["AuditJournal", "Batch", "Orphan", "adopt_orphans"]
