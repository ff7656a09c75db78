"""The audit journal on disk: where an audit row becomes durable before the response,
whether or not PostgreSQL is up (docs/privacy.md "The audit log").

Each running dashboard appends JSON lines to a file of its own,
`<data dir>/audit/journal-<random>.jsonl`, and holds an exclusive `flock` on it for its
whole life. `write` puts rows in the file (a crash of Trygg no longer loses them);
`sync` fsyncs what was written (then a crash of the machine does not either); `append`
is both. The flusher (dashboard/audit.py) copies rows to trygg.audit_log and then
`truncate`s the file. A file whose lock nobody holds belongs to a dashboard that is gone
(a crash, or a stop while PostgreSQL was down): `adopt_orphans` hands it to whoever
starts next, who stores its rows and removes it. Every row carries its id, so a file
replayed twice stores each row once.

Threads: `write` and `truncate` run on one thread (the event loop's, in dashboard/audit.py),
`sync` may run on another meanwhile (the journal's worker), and the caller moves `size`
up to what a finished `sync` covered; `read` of bytes below `size` may run anywhere,
since those bytes change only by `truncate`, which the reader itself calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dashboard.errors import AuditJournalError
from storage.audit_store import AuditRow

PREFIX: Final = "journal-"
SUFFIX: Final = ".jsonl"


@dataclass
class Batch:
    """Rows read from a journal: `end` is the byte offset after the last whole line;
    `bad` counts lines that were not audit rows (skipped, never expected)."""

    rows: list[AuditRow]
    end: int
    bad: int = 0


def parse(data: bytes, start: int) -> Batch:
    """The whole lines of `data` (which begins at offset `start`); a torn last line (no
    newline: it was never fsync'ed, so no response waited for it) is left out."""
    whole = data[: data.rfind(b"\n") + 1]
    rows: list[AuditRow] = []
    bad = 0
    for line in whole.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(AuditRow.from_json(line))
        except (ValueError, KeyError, TypeError):
            bad += 1
    return Batch(rows, start + len(whole), bad)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class AuditJournal:
    """This dashboard's own journal file, created empty and locked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{PREFIX}{uuid.uuid4().hex}{SUFFIX}"
        #: bytes written and fsync'ed
        self.size = 0
        #: bytes written (fsync'ed or not)
        self.written = 0
        self._broken: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise AuditJournalError(f"cannot create the audit journal in {directory}: {exc}") from exc
        if not _lock(self._fd):  # a fresh name: cannot happen unless something else took it
            os.close(self._fd)
            raise AuditJournalError(f"the audit journal {self.path} is locked by another process")
        try:
            _fsync_dir(directory)  # the file's name survives a crash before its first row does
        except OSError as exc:
            self.close(remove=True)
            raise AuditJournalError(f"cannot create the audit journal in {directory}: {exc}") from exc

    def append(self, lines: bytes) -> int:
        """`write` and `sync` (cut back on an error); returns the new size."""
        self.write(lines)
        try:
            self.sync()
        except AuditJournalError:
            self.cut_back()
            raise
        self.size = self.written
        return self.size

    def write(self, lines: bytes) -> int:
        """Write whole lines (not yet fsync'ed); returns the bytes written in all. On an
        error nothing of the batch is kept (the file is cut back) and AuditJournalError
        is raised."""
        if self._broken is not None:
            raise AuditJournalError(self._broken)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            # Cut the batch off again. Not fsync'ed: the next successful fsync makes the
            # cut durable, and until then a crash leaves at most rows of requests that
            # got an error (or a torn last line, which is ignored).
            try:
                os.ftruncate(self._fd, self.written)
            except OSError as again:
                self._broken = f"the audit journal {self.path} cannot be written or repaired: {again}"
            raise AuditJournalError(f"cannot write the audit journal {self.path}: {exc}") from exc
        self.written += len(lines)
        return self.written

    def sync(self) -> None:
        """fsync what was written; on an error the caller cuts back (`cut_back`)."""
        if self._broken is not None:
            raise AuditJournalError(self._broken)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditJournalError(f"cannot write the audit journal {self.path}: {exc}") from exc

    def cut_back(self) -> int:
        """Drop what was written but not fsync'ed (after a failed `sync`); returns the
        bytes dropped."""
        dropped = self.written - self.size
        try:
            os.ftruncate(self._fd, self.size)
        except OSError as exc:
            self._broken = f"the audit journal {self.path} cannot be written or repaired: {exc}"
        self.written = self.size
        return dropped

    def read(self, start: int, end: int) -> Batch:
        """The rows in bytes [start, end) (whole lines only)."""
        try:
            data = os.pread(self._fd, end - start, start) if end > start else b""
        except OSError as exc:
            raise AuditJournalError(f"cannot read the audit journal {self.path}: {exc}") from exc
        return parse(data, start)

    def truncate(self, expected: int) -> bool:
        """Empty the file if it still holds exactly `expected` bytes (everything in it is
        in PostgreSQL). Not fsync'ed: if a crash undoes it, the rows are stored again, once."""
        if self._broken is not None or not self.size == self.written == expected or expected == 0:
            return False
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            return False
        self.size = self.written = 0
        return True

    def close(self, *, remove: bool) -> None:
        """Release the file; `remove` when everything in it is in PostgreSQL (else the
        next dashboard to start adopts it)."""
        if self._fd < 0:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1


class Orphan:
    """A journal nobody holds, locked by us while we store its rows."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def read(self) -> Batch:
        with os.fdopen(os.dup(self._fd), "rb") as fh:
            return parse(fh.read(), 0)

    def remove(self) -> None:
        """Its rows are in PostgreSQL."""
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


@contextlib.contextmanager
def adopt_orphans(directory: Path, own: Path | None = None) -> Iterator[list[Orphan]]:
    """Lock every journal file in `directory` that no running dashboard holds, oldest
    first; the locks are released when the block ends."""
    found: list[tuple[float, Orphan]] = []
    try:
        try:
            paths = [p for p in directory.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
        except FileNotFoundError:
            paths = []
        for path in paths:
            if path == own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another dashboard just stored and removed it
                continue
            if not _lock(fd):
                os.close(fd)
                continue
            try:
                mtime = os.fstat(fd).st_mtime
            except OSError:
                mtime = 0.0
            found.append((mtime, Orphan(path, fd)))
        found.sort(key=lambda item: item[0])
        yield [orphan for _, orphan in found]
    finally:
        for _, orphan in found:
            orphan.release()


__all__ = ["AuditJournal", "Batch", "Orphan", "adopt_orphans", "parse"]
