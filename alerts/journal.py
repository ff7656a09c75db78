"""The alert journal: a local file that holds alert changes until PostgreSQL has them.

The writer thread appends every batch (fsync'ed) before it writes the batch to the
database, and empties the file once everything in it is committed. So an alert change
survives a crash of Trygg, also while PostgreSQL is down, once the writer has taken it
(within a millisecond or so of the change, after its MQTT publish): at the next start
the journal is read back, its alerts take part in the restore, and its rows are written
(in order) as soon as the database answers. Writing a row twice is harmless (the store
keeps the newest `version` and each transition once).

Format: JSON lines, one alert change each: ``{"a": {alert row}, "t": [transitions]}``.
A torn last line (a crash in the middle of a write, never fsync'ed) is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.alerts_store import AlertRecord, TransitionRecord
from trygg.logging import get_logger

log = get_logger("trygg.alerts")

Item = tuple[AlertRecord, tuple[TransitionRecord, ...]]

_TIMES = ("opened_at", "updated_at", "acknowledged_at", "resolved_at", "closed_at", "escalated_at")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode(item: Item) -> bytes:
    rec, steps = item
    alert: dict[str, Any] = {name: getattr(rec, name) for name in rec.__dataclass_fields__}
    for name in _TIMES:
        alert[name] = _time(alert[name])
    alert["teams"] = list(rec.teams)
    alert["sources"] = list(rec.sources)
    trans = [[t.seq, t.at.isoformat(), t.from_state, t.to_state, t.actor, t.note] for t in steps]
    return json.dumps({"a": alert, "t": trans}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> Item:
    doc = json.loads(line)
    alert = dict(doc["a"])
    for name in _TIMES:
        alert[name] = _parse_time(alert[name])
    alert["teams"] = tuple(alert["teams"])
    alert["sources"] = tuple(alert["sources"])
    rec = AlertRecord(**alert)
    steps = tuple(
        TransitionRecord(rec.alert_id, seq, datetime.fromisoformat(at), frm, to, actor, note)
        for seq, at, frm, to, actor, note in doc["t"]
    )
    return rec, steps


class Journal:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self.path = directory / "alerts.journal"
        directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, items: Sequence[Item]) -> None:
        """Append and fsync (raises OSError when the disk refuses)."""
        if not items:
            return
        fd = self._open()
        os.write(fd, b"".join(encode(item) for item in items))
        os.fsync(fd)

    def clear(self) -> None:
        """Everything in the journal is committed to PostgreSQL."""
        fd = self._open()
        os.ftruncate(fd, 0)
        os.fsync(fd)

    def read(self) -> list[Item]:
        """Every whole change in the journal, in order."""
        if not self.path.exists():
            return []
        items: list[Item] = []
        with self.path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    log.warning("torn last line in the alert journal ignored", path=str(self.path), line=n)
                    break
                try:
                    items.append(decode(line))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("unreadable line in the alert journal skipped", path=str(self.path), line=n,
                              error=str(exc))
        return items

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = ["Item", "Journal", "decode", "encode"]
