"""The one durable local log: where the spool, the alert journal and the audit journal keep
records on this machine's disk until PostgreSQL has them. Format, guarantees and what an
operator sees on a full disk: docs/local-log.md.

One append-only file: a 16-byte file header (`FILE_MAGIC`, a random log id), then
records, each a 12-byte header (`MAGIC`, payload length u32, crc32 of the payload u32)
and the payload. A write is whole or raises (short writes are continued; on any error
the file is cut back to the last good end); `append` also fsyncs, and a failed fsync cuts
back to what the last good fsync covered and raises, so the caller acknowledges nothing.
`write` + `sync` split the two for a caller that fsyncs on another thread (the audit
journal), with `cut_back` after a failed `sync`. At open a torn tail is cut off; reading
resynchronises on the next valid header after a torn or corrupt record, reports it
(`trygg_local_log_skipped_total{log}`) and reads on. `mark_consumed` keeps a checkpoint
beside the log (`<file>.consumed`, tied to the log id) and empties the log once all is
consumed. A failed write or fsync sets `degraded` (`trygg_local_log_degraded{log}`,
`degraded()` for `/healthz`), cleared by the next successful append or, for a full disk,
by `recheck` once there is room.

Threads: `write`, `cut_back`, `clear` and `mark_consumed` on one thread (the log's
writer); `sync` may run on another meanwhile, never together with `clear`; `records`
reads with pread, anywhere, below `durable`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final, TypeVar

from prometheus_client import Counter, Gauge

from storage.errors import StorageError
from trygg.logging import get_logger

log = get_logger(__name__)

MAGIC: Final = b"\xffTRG"  # 0xff never occurs in UTF-8 text, so never in a JSON payload
FILE_MAGIC: Final = b"\xffTRYLOG1"
FRAME: Final = struct.Struct("<4sII")  # magic, payload length, crc32 of the payload
FILE_HEADER: Final = struct.Struct("<8s8s")  # file magic, log id
CHECKPOINT: Final = struct.Struct("<4s8sQI")  # magic, log id, offset, crc32 of the first 20 bytes
CHECKPOINT_MAGIC: Final = b"\xffTRC"
#: Offset of the first record.
BEGIN: Final = FILE_HEADER.size
#: A length above this is taken for a corrupt header.
MAX_RECORD: Final = 64 << 20
#: How much of the end of the file is looked at for a torn tail at open.
TAIL_WINDOW: Final = 4 << 20
READ_BLOCK: Final = 1 << 20
#: Free space that counts as "room again" for a log degraded by a full disk.
ROOM_BYTES: Final = 256 << 10
#: The logs of this process, by label.
LABELS: Final = ("spool", "alerts", "audit")

SKIPPED = Counter("trygg_local_log_skipped", "Torn or corrupt stretches skipped in a local log", ["log"])
DEGRADED = Gauge("trygg_local_log_degraded", "1 while a local log cannot be written (disk full, I/O error)",
                 ["log"])
for _label in LABELS:
    DEGRADED.labels(_label).set(0)
    SKIPPED.labels(_label)

T = TypeVar("T")


class LocalLogError(StorageError):
    """A local log could not be written, synced or opened; `reason` is short and fit for
    an operator ("disk full"), `errno` the system's error number (None if not a system
    error)."""

    def __init__(self, message: str, reason: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.errno = errno_


class LocalLogLocked(LocalLogError):
    """Another process holds the log's lock (it is in use)."""


# --- degraded state, per label ---------------------------------------------------------

_state_lock = threading.RLock()  # reentrant: a log's __del__ may run inside
_degraded: dict[str, dict[int, str]] = {}  # label -> {id of the log: reason}


def _mark(label: str, key: int, reason: str | None) -> None:
    with _state_lock:
        logs = _degraded.setdefault(label, {})
        if reason is None:
            logs.pop(key, None)
        else:
            logs[key] = reason
        DEGRADED.labels(label).set(1 if logs else 0)


def degraded() -> dict[str, str]:
    """Label → reason of every kind of local log of this process that cannot be written."""
    with _state_lock:
        return {label: next(iter(logs.values())) for label, logs in sorted(_degraded.items()) if logs}


def reason_of(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if exc.errno == errno.EIO:
        return "disk I/O error"
    return f"cannot write ({os.strerror(exc.errno) if exc.errno else exc})"


def frame(payload: bytes) -> bytes:
    return FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _write_all(fd: int, data: bytes, at: int) -> None:
    """Write all of `data` at offset `at`, continuing after short writes."""
    os.lseek(fd, at, os.SEEK_SET)
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def scan(fd: int, start: int, end: int,
         skipped: Callable[[int, int], None] | None = None) -> Iterator[tuple[bytes, int]]:
    """(payload, offset after its record) for every valid record in [start, end). Bytes
    that are not a valid record are passed over to the next valid header; each such
    stretch is reported to `skipped(from, to)`."""
    buf = b""
    at = start  # file offset of buf[0]
    pos = start  # where the next record may begin
    bad_from = -1

    def more(i: int, need: int) -> tuple[bytes, int]:
        """buf from i on, with at least `need` bytes if the file has them."""
        want = min(max(READ_BLOCK, need - (len(buf) - i)), end - (at + len(buf)))
        data = os.pread(fd, want, at + len(buf)) if want > 0 else b""
        return buf[i:] + data, at + i

    while pos < end:
        i = pos - at
        if len(buf) - i < FRAME.size:
            buf, at = more(i, FRAME.size)
            i = 0
            if len(buf) < FRAME.size:
                break  # too short for a header: a torn tail
        magic, length, crc = FRAME.unpack_from(buf, i)
        size = FRAME.size + length
        if magic == MAGIC and length <= MAX_RECORD and pos + size <= end:
            if len(buf) - i < size:
                buf, at = more(i, size)
                i = 0
            payload = buf[i + FRAME.size:i + size]
            if len(payload) == length and zlib.crc32(payload) == crc:
                if bad_from >= 0 and skipped is not None:
                    skipped(bad_from, pos)
                bad_from = -1
                pos += size
                yield payload, pos
                continue
        if bad_from < 0:
            bad_from = pos
        found = buf.find(MAGIC, i + 1)
        # a magic may straddle the end of what is read: keep its first bytes
        pos = at + found if found >= 0 else at + max(i + 1, len(buf) - len(MAGIC) + 1)
    if bad_from < 0 and pos < end:
        bad_from = pos
    if bad_from >= 0 and skipped is not None:
        skipped(bad_from, end)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLog:
    """One log file (see the module's docstring). `label` names it in metrics and in
    `/healthz` (one of `LABELS`); `lock` takes an exclusive flock for the log's life
    (raises LocalLogLocked if another holds it); `create=False` opens only an existing
    file (FileNotFoundError otherwise)."""

    def __init__(self, path: Path, label: str, *, lock: bool = False, create: bool = True) -> None:
        self.path = path
        self.label = label
        self._checkpoint_path = path.with_name(path.name + ".consumed")
        self._broken: str | None = None  # a cut back failed: the file's end is not known good
        self._reason: str | None = None
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise LocalLogError(f"cannot open the local log {path}: {exc}", reason_of(exc), exc.errno) from exc
        if lock:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(self._fd)
                raise LocalLogLocked(f"the local log {path} is in use by another process", "in use") from exc
        self._dir_synced = False
        try:
            self._open_existing()
        except OSError as exc:
            os.close(self._fd)
            raise LocalLogError(f"cannot read the local log {path}: {exc}", reason_of(exc), exc.errno) from exc

    def _open_existing(self) -> None:
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, BEGIN, 0) if size >= BEGIN else b""
        if len(head) < BEGIN:  # empty, or a header torn by a crash: nothing was ever durable in it
            if size:
                os.ftruncate(self._fd, 0)
            self._id = secrets.token_bytes(8)
            self._on_disk = False
            self._written = self._durable = self._consumed = BEGIN
            return
        magic, self._id = FILE_HEADER.unpack(head)
        if magic != FILE_MAGIC:
            self.report(0, BEGIN, "file header not recognised")
        self._on_disk = True
        self._dir_synced = True
        end = self._valid_end(size)
        if end < size:
            self.report(end, size, "torn tail cut off")
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        self._written = self._durable = end
        self._consumed = self._read_checkpoint(end)

    def _valid_end(self, size: int) -> int:
        """The end of the last valid record (BEGIN if none)."""
        window = max(BEGIN, size - TAIL_WINDOW)
        while True:
            end = -1
            for _, after in scan(self._fd, window, size):
                end = after
            if end >= 0 or window == BEGIN:
                return max(end, BEGIN)
            window = BEGIN  # one record longer than the window, or garbage: look at everything

    def _read_checkpoint(self, end: int) -> int:
        try:
            data = self._checkpoint_path.read_bytes()
        except FileNotFoundError:
            return BEGIN
        if len(data) == CHECKPOINT.size:
            magic, log_id, offset, crc = CHECKPOINT.unpack(data)
            if magic == CHECKPOINT_MAGIC and crc == zlib.crc32(data[:-4]) and log_id == self._id \
                    and BEGIN <= offset <= end:
                return int(offset)
        return BEGIN  # torn, or of an earlier content of the log: read it all again

    begin: Final = BEGIN  # offset of the first record

    @property
    def written(self) -> int:  # offset after the last record written (fsync'ed or not)
        return self._written

    @property
    def durable(self) -> int:  # offset after the last record a successful fsync covered
        return self._durable

    @property
    def consumed(self) -> int:  # offset up to which the records were consumed
        return self._consumed

    @property
    def pending_bytes(self) -> int:
        return max(0, self._durable - self._consumed)

    @property
    def degraded(self) -> str | None:  # why the log cannot be written (None while it can)
        return self._reason

    def _failed(self, what: str, exc: OSError) -> LocalLogError:
        reason = reason_of(exc)
        if self._reason is None:
            log.warning("local_log_degraded", log=self.label, path=str(self.path), reason=reason, error=str(exc))
        self._reason = reason
        _mark(self.label, id(self), reason)
        return LocalLogError(f"cannot {what} the local log {self.path}: {exc}", reason, exc.errno)

    def _ok(self) -> None:
        if self._reason is not None:
            log.info("local_log_writable_again", log=self.label, path=str(self.path), was=self._reason)
            self._reason = None
            _mark(self.label, id(self), None)

    def recheck(self) -> None:
        """Clear a "disk full" state once the file system has room again (for a log that
        is not appended to for a while: the spool while PostgreSQL takes the events)."""
        if self._reason != "disk full" or self._broken is not None:
            return
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return
        if stat.f_bavail * stat.f_frsize >= ROOM_BYTES:
            self._ok()

    def report(self, start: int, end: int, what: str) -> None:
        """Log and count bytes skipped (also a record its reader could not decode)."""
        SKIPPED.labels(self.label).inc()
        log.warning("local_log_records_skipped", log=self.label, path=str(self.path), what=what,
                    start=start, end=end, bytes=end - start)

    # --- writing -------------------------------------------------------------------

    def write(self, payloads: Iterable[bytes]) -> int:
        """Write records (not yet fsync'ed); returns the offset after them. On an error
        nothing of them stays in the file and LocalLogError is raised."""
        data = b"".join(frame(p) for p in payloads)
        if not data:
            return self._written
        if self._broken is not None:  # a cut back failed: try it again first
            try:
                os.ftruncate(self._fd, self._written if self._on_disk else 0)
            except OSError as exc:
                raise self._failed("repair", exc) from exc
            self._broken = None
        at = self._written
        if not self._on_disk:
            data = FILE_HEADER.pack(FILE_MAGIC, self._id) + data
            at = 0
        try:
            _write_all(self._fd, data, at)
        except OSError as exc:
            self._cut(at)
            raise self._failed("write", exc) from exc
        self._on_disk = True
        self._written = at + len(data)
        return self._written

    def sync(self) -> int:
        """fsync what was written; returns the durable offset. On an error raises
        LocalLogError (the writer's thread then calls `cut_back`)."""
        upto = self._written
        try:
            os.fsync(self._fd)
            if not self._dir_synced:  # the file's name must survive a crash as well
                _fsync_dir(self.path.parent)
                self._dir_synced = True
        except OSError as exc:
            raise self._failed("fsync", exc) from exc
        if upto > self._durable:
            self._durable = upto
        if self._broken is None:
            self._ok()
        return self._durable

    def append(self, payloads: Iterable[bytes]) -> int:
        """Write and fsync: when this returns the records survive a crash of the machine.
        On any error nothing of them is kept and LocalLogError is raised."""
        self.write(payloads)
        try:
            return self.sync()
        except LocalLogError:
            self.cut_back()
            raise

    def cut_back(self) -> int:
        """Drop what was written but not fsync'ed (after a failed `sync`); returns the
        bytes dropped."""
        dropped = self._written - self._durable
        self._cut(self._durable if self._durable > BEGIN else 0)
        return dropped

    def _cut(self, end: int) -> None:
        """Cut the file back to `end` (0: not even the file header)."""
        try:
            os.ftruncate(self._fd, end)
        except OSError as exc:
            self._broken = f"the local log {self.path} cannot be cut back: {exc}"
            self._failed("cut back", exc)
        else:
            self._broken = None
        if end < BEGIN:
            self._on_disk = False
            self._written = self._durable = BEGIN
        else:
            self._written = end
            self._durable = min(self._durable, end)

    # --- consuming -----------------------------------------------------------------

    def records(self, start: int | None = None, end: int | None = None) -> Iterator[tuple[bytes, int]]:
        """(payload, offset after it) of every valid record from `start` (default: what
        is not consumed) to `end` (default: what is durable); torn or corrupt stretches
        are skipped and reported."""
        start = max(BEGIN, self._consumed if start is None else start)
        end = self._durable if end is None else end
        if not self._on_disk or start >= end:
            return iter(())
        return scan(self._fd, start, end, lambda a, b: self.report(a, b, "torn or corrupt"))

    def mark_consumed(self, offset: int) -> None:
        """Records before `offset` are consumed: remembered durably, so a restart reads
        on from there (a crash before this returns reads them again). When everything is
        consumed the log is emptied instead. Raises LocalLogError when the checkpoint
        cannot be written (the offset is still kept in memory)."""
        self._consumed = max(self._consumed, min(offset, self._durable))
        if self._consumed >= self._durable and self._written == self._durable:
            self.clear()
            return
        data = CHECKPOINT.pack(CHECKPOINT_MAGIC, self._id, self._consumed, 0)[:-4]
        data += struct.pack("<I", zlib.crc32(data))
        try:
            fd = os.open(self._checkpoint_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data, 0)  # in place: a full disk has no room for a new file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._failed("write the checkpoint of", exc) from exc

    def clear(self, expected: int | None = None) -> bool:
        """Empty the log (everything in it is consumed); with `expected`, only if exactly
        that much is durable and nothing more written. Not fsync'ed: if a crash undoes
        it, the records are read again (every consumer stores a record once)."""
        if expected is not None and not self._durable == self._written == expected:
            return False
        if self._broken is not None:
            return False
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            self._failed("empty", exc)
            return False
        self._id = secrets.token_bytes(8)  # a checkpoint of the old content never applies again
        self._on_disk = False
        self._written = self._durable = self._consumed = BEGIN
        return True

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        _mark(self.label, id(self), None)

    def remove(self) -> None:
        """Remove the log and its checkpoint (everything in it is stored elsewhere)."""
        self.close()
        self.path.unlink(missing_ok=True)
        self._checkpoint_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # if a crash undoes the removal, the records are stored again, once
            _fsync_dir(self.path.parent)

    def __del__(self) -> None:  # a log nobody closed: its fd and its degraded state go with it
        if getattr(self, "_fd", -1) >= 0:
            self.close()


def legacy_lines(path: Path, decode: Callable[[bytes], T], marker: bytes, label: str,
                 start: int = 0) -> Iterator[T]:
    """The records of a JSON-lines file of Trygg's previous version, from byte `start`.
    A line that does not decode (a fragment of a cut-off write with the next record glued
    on) is tried again from its last `marker`; what still does not decode is skipped, and
    both are reported."""
    with path.open("rb") as fh:
        fh.seek(start)
        offset = start
        for line in fh:
            begin, offset = offset, offset + len(line)
            body = line.rstrip(b"\n")
            for at in dict.fromkeys((0, max(body.rfind(marker), 0))):
                try:
                    item = decode(body[at:])
                except (ValueError, KeyError, TypeError):
                    continue
                if at:
                    SKIPPED.labels(label).inc()
                    log.warning("local_log_fragment_skipped", log=label, path=str(path), start=begin, bytes=at)
                yield item
                break
            else:
                if body.strip():
                    SKIPPED.labels(label).inc()
                    log.warning("local_log_unreadable_line_skipped", log=label, path=str(path), start=begin,
                                bytes=len(line))


__all__ = ["BEGIN", "DEGRADED", "LABELS", "SKIPPED", "LocalLog", "LocalLogError", "LocalLogLocked", "degraded",
           "frame", "legacy_lines", "reason_of", "scan"]
