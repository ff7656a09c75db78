"""The alert journal: a local file that holds alert changes until PostgreSQL has them.

The writer thread appends every batch (fsync'ed) before it writes the batch to the
database, and empties the journal once everything in it is committed. So an alert change
survives a crash of Trygg, also while PostgreSQL is down, once the writer has taken it
(within a millisecond or so of the change, after its MQTT publish): at the next start
the journal is read back, its alerts take part in the restore, and its rows are written
(in order) as soon as the database answers. Writing a row twice is harmless (the store
keeps the newest `version` and each transition once).

Format: a durable local log (storage/local_log.py, `alerts.log`) with one alert change
per record, as ASCII JSON ``{"a": {alert record}, "t": [transitions]}`` (escaped, so any
Python string is journaled, a lone surrogate included). The alert record is the kernel's
`Alert.record()` with times as ISO 8601 text: the same fields, under the same names, as
the row the journals of earlier versions held, so those still replay. A change that cannot be encoded
at all is left out of the journal with an error (it still goes to the database). The
journal of the previous version (`alerts.journal`, JSON lines) is read once at start and
removed with the first `clear`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from alerts import metrics
from storage.local_log import LocalLog, legacy_lines
from trygg.alert import TIME_FIELDS, Alert, Transition
from trygg.contract import AlertState
from trygg.logging import get_logger

log = get_logger(__name__)

#: one change: the alert after it, and the transitions that led there
Item = tuple[Alert, tuple[Transition, ...]]

FILE: Final = "alerts.log"
LEGACY_FILE: Final = "alerts.journal"


def encode(item: Item) -> bytes:
    """One journal record; TypeError or ValueError for a change JSON cannot hold."""
    alert, steps = item
    rec: dict[str, Any] = alert.record()
    for name in TIME_FIELDS:
        if rec[name] is not None:
            rec[name] = rec[name].isoformat()
    trans = [[t.seq, t.at.isoformat(), None if t.from_state is None else t.from_state.value, t.to_state.value,
              t.actor, t.note] for t in steps]
    return json.dumps({"a": rec, "t": trans}, separators=(",", ":")).encode()


def decode(payload: bytes) -> Item:
    doc = json.loads(payload)
    alert = Alert.from_record(doc["a"])
    steps = tuple(
        Transition(alert.alert_id, seq, datetime.fromisoformat(at), None if frm is None else AlertState(frm),
                   AlertState(to), actor, note)
        for seq, at, frm, to, actor, note in doc["t"]
    )
    return alert, steps


class Journal:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._log = LocalLog(directory / FILE, "alerts")
        self._legacy = directory / LEGACY_FILE

    @property
    def path(self) -> Path:
        return self._log.path

    def append(self, items: Sequence[Item]) -> None:
        """Append and fsync (raises LocalLogError when the disk refuses; nothing of the
        batch is kept then). A change that cannot be encoded is left out, with an error."""
        payloads = []
        for item in items:
            try:
                payloads.append(encode(item))
            except (TypeError, ValueError) as exc:
                metrics.DELIVERIES_FAILED.labels("journal").inc()
                log.error("alert_change_cannot_be_journaled",
                          alert_id=item[0].alert_id, error=str(exc))
        if payloads:
            self._log.append(payloads)

    def clear(self) -> None:
        """Everything in the journal is committed to PostgreSQL (raises LocalLogError
        when the file cannot be emptied: then it is read again at the next start)."""
        self._log.mark_consumed(self._log.durable)
        if self._legacy.exists():
            self._legacy.unlink()
            log.info("alert_journal_of_previous_version_stored_and_removed", journal=str(self._legacy))

    def read(self) -> list[Item]:
        """Every change in the journal, in order (the previous version's first)."""
        items: list[Item] = []
        if self._legacy.exists():
            items.extend(legacy_lines(self._legacy, decode, b'{"a":', "alerts"))
        start = self._log.consumed
        for payload, end in self._log.records():
            try:
                items.append(decode(payload))
            except (ValueError, KeyError, TypeError) as exc:
                self._log.report(start, end, f"not an alert change: {exc}")
            start = end
        return items

    def close(self) -> None:
        self._log.close()


__all__ = ["Item", "Journal", "decode", "encode"]
