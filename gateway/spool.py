"""The local spool: where events become durable while PostgreSQL is unreachable.

One append-only file of JSON lines, fsync'ed after every batch before the batch is
acknowledged to the broker. When PostgreSQL returns, the file is replayed in order, in
chunks; the byte offset replayed so far is kept in a side file, so a crash during replay
resumes where it stopped (the event de-duplication makes a repeated chunk harmless).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import SpoolError
from storage import DeadLetter, StatusRow
from trygg.contract import Event, EventType

Record = Event | DeadLetter | StatusRow


def encode(rec: Record) -> dict[str, Any]:
    if isinstance(rec, Event):
        return {"k": "e", "d": rec.device_id, "i": rec.event_id, "r": rec.resident_id,
                "y": rec.type.value, "ts": rec.ts.isoformat(), "ra": rec.received_at.isoformat(),
                "data": rec.data}
    if isinstance(rec, DeadLetter):
        return {"k": "x", "ra": rec.received_at.isoformat(), "t": rec.topic,
                "p": base64.b64encode(rec.payload).decode(), "why": rec.reason, "detail": rec.detail}
    return {"k": "s", "d": rec.device_id, "on": rec.online, "at": rec.at.isoformat()}


def decode(doc: dict[str, Any]) -> Record:
    kind = doc["k"]
    if kind == "e":
        return Event(doc["d"], doc["i"], EventType(doc["y"]), datetime.fromisoformat(doc["ts"]),
                     datetime.fromisoformat(doc["ra"]), doc["data"], doc["r"])
    if kind == "x":
        return DeadLetter(datetime.fromisoformat(doc["ra"]), doc["t"], base64.b64decode(doc["p"]),
                          doc["why"], doc["detail"])
    return StatusRow(doc["d"], doc["on"], datetime.fromisoformat(doc["at"]))


class Spool:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._path = directory / "spool.jsonl"
        self._offset_path = directory / "replayed.offset"
        directory.mkdir(parents=True, exist_ok=True)

    def pending_bytes(self) -> int:
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - self._replayed_offset())

    def append(self, records: Sequence[Record]) -> None:
        """Append and fsync; when this returns the records survive a crash."""
        lines = b"".join(
            json.dumps(encode(r), separators=(",", ":")).encode() + b"\n" for r in records
        )
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"cannot write spool {self._path}: {exc}") from exc

    def _replayed_offset(self) -> int:
        try:
            return int(self._offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def chunks(self, size: int) -> Iterator[tuple[list[Record], int]]:
        """Yield (records, end offset) from the replay point on; a torn last line is
        ignored (it was never fsync'ed, so never acknowledged)."""
        if not self._path.exists():
            return
        with self._path.open("rb") as fh:
            fh.seek(self._replayed_offset())
            batch: list[Record] = []
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                batch.append(decode(json.loads(line)))
                if len(batch) >= size:
                    yield batch, fh.tell()
                    batch = []
            if batch:
                yield batch, fh.tell()

    def mark_replayed(self, offset: int) -> None:
        tmp = self._offset_path.with_suffix(".tmp")
        tmp.write_text(str(offset))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(self._offset_path)

    def clear(self) -> None:
        """Called once every record is in PostgreSQL."""
        self._path.unlink(missing_ok=True)
        self._offset_path.unlink(missing_ok=True)
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
