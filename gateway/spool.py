"""The local spool: where events become durable while PostgreSQL is unreachable.

A durable local log (storage/local_log.py) of one JSON record per frame, fsync'ed after
every batch before the batch is acknowledged to the broker; a batch the disk cannot take
whole raises `SpoolError` and leaves nothing of itself behind. When PostgreSQL returns,
`replay` hands the records over in order, in chunks, and checkpoints after each chunk, so
a crash during replay resumes where it stopped (the event de-duplication makes a repeated
chunk harmless); a checkpoint the disk cannot take is only logged, for the same reason.
Once everything is replayed the log is emptied, which also frees a full disk.

A spool left by the previous version (`spool.jsonl` and `replayed.offset`) is replayed
first, once, then removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from gateway.errors import SpoolError
from storage import DeadLetter, StatusRow
from storage.local_log import LocalLog, LocalLogError, legacy_lines
from trygg.contract import Event, EventType
from trygg.logging import get_logger

log = get_logger(__name__)

Record = Event | DeadLetter | StatusRow

FILE: Final = "spool.log"
LEGACY_FILE: Final = "spool.jsonl"
LEGACY_OFFSET: Final = "replayed.offset"


def encode(rec: Record) -> bytes:
    doc: dict[str, Any]
    if isinstance(rec, Event):
        doc = {"k": "e", "d": rec.device_id, "i": rec.event_id, "r": rec.resident_id, "y": rec.type.value,
               "ts": rec.ts.isoformat(), "ra": rec.received_at.isoformat(), "data": rec.data}
    elif isinstance(rec, DeadLetter):
        doc = {"k": "x", "ra": rec.received_at.isoformat(), "t": rec.topic,
               "p": base64.b64encode(rec.payload).decode(), "why": rec.reason, "detail": rec.detail}
    else:
        doc = {"k": "s", "d": rec.device_id, "on": rec.online, "at": rec.at.isoformat()}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(payload: bytes) -> Record:
    doc = json.loads(payload)
    kind = doc["k"]
    if kind == "e":
        return Event(doc["d"], doc["i"], EventType(doc["y"]), datetime.fromisoformat(doc["ts"]),
                     datetime.fromisoformat(doc["ra"]), doc["data"], doc["r"])
    if kind == "x":
        return DeadLetter(datetime.fromisoformat(doc["ra"]), doc["t"], base64.b64decode(doc["p"]),
                          doc["why"], doc["detail"])
    if kind == "s":
        return StatusRow(doc["d"], doc["on"], datetime.fromisoformat(doc["at"]))
    raise ValueError(f"unknown spool record kind {kind!r}")


class Spool:
    """The spool of one durable writer, in `directory` (created if missing)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._log = LocalLog(directory / FILE, "spool")
        self._legacy = directory / LEGACY_FILE
        self._has_legacy = self._legacy.exists()  # looked at once: pending_bytes runs every round

    @property
    def degraded(self) -> str | None:
        """Why the spool cannot be written now (None while it can)."""
        return self._log.degraded

    def recheck(self) -> None:
        """Clear a "disk full" state once the disk has room again."""
        self._log.recheck()

    def pending_bytes(self) -> int:
        return self._log.pending_bytes + self._legacy_pending()

    def append(self, records: Sequence[Record]) -> None:
        """Append and fsync; when this returns the records survive a crash. Raises
        SpoolError, with nothing of the batch kept, when the disk cannot take it."""
        try:
            self._log.append([encode(r) for r in records])
        except LocalLogError as exc:
            raise SpoolError(str(exc)) from exc

    def replay(self, write: Callable[[list[Record]], None], chunk: int) -> int:
        """Hand every record not yet replayed to `write`, in order, `chunk` at a time;
        returns how many. What `write` raises ends the replay (the rest stays, from the
        last chunk written on)."""
        count = self._replay_legacy(write, chunk) if self._has_legacy else 0
        batch: list[Record] = []
        start = self._log.consumed
        for payload, end in self._log.records():
            try:
                batch.append(decode(payload))
            except (ValueError, KeyError, TypeError) as exc:
                self._log.report(start, end, f"not a spool record: {exc}")
            start = end
            if len(batch) >= chunk:
                write(batch)
                count += len(batch)
                batch = []
                self._checkpoint(end)
        if batch:
            write(batch)
            count += len(batch)
        self._checkpoint(self._log.durable)  # everything: the log is emptied
        return count

    def _checkpoint(self, offset: int) -> None:
        try:
            self._log.mark_consumed(offset)
        except LocalLogError as exc:
            log.warning("spool_replay_checkpoint_not_written", error=str(exc))

    def close(self) -> None:
        self._log.close()

    def remove(self) -> None:
        """Remove the spool's files and directory (a spool of a writer that no longer
        exists, once replayed)."""
        self._log.remove()
        with contextlib.suppress(OSError):
            self._remove_legacy()
        with contextlib.suppress(OSError):  # something else lives there: leave it
            self._dir.rmdir()

    # --- the previous version's spool ------------------------------------------------

    def _legacy_offset(self) -> int:
        try:
            return int((self._dir / LEGACY_OFFSET).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _legacy_pending(self) -> int:
        if not self._has_legacy:
            return 0
        try:
            size = self._legacy.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - self._legacy_offset())

    def _replay_legacy(self, write: Callable[[list[Record]], None], chunk: int) -> int:
        """Replay `spool.jsonl` from its `replayed.offset` (all of it again after a crash
        in between: stored once), then remove both."""
        count = 0
        batch: list[Record] = []
        for rec in legacy_lines(self._legacy, decode, b'{"k":', "spool", self._legacy_offset()):
            batch.append(rec)
            if len(batch) >= chunk:
                write(batch)
                count += len(batch)
                batch = []
        if batch:
            write(batch)
            count += len(batch)
        self._remove_legacy()
        log.info("spool_of_previous_version_replayed_and_removed", records=count, spool=str(self._legacy))
        return count

    def _remove_legacy(self) -> None:
        self._has_legacy = False
        self._legacy.unlink(missing_ok=True)
        (self._dir / LEGACY_OFFSET).unlink(missing_ok=True)
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["Record", "Spool", "decode", "encode"]
