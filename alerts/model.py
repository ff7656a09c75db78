"""What alerts are keyed by (ids, sources, flood keys), and what a change carries.

The alert itself is the kernel's `trygg.alert.Alert`: frozen, so a `Change` hands out
the alert as it is, and the publisher, the subscribers and the database writer may read
it on other threads while `AlertService` goes on (it replaces an alert at every change).

Ids: an alert's id is derived from the kind and the `(device_id, event_id)` source of the
intent that opened it (`alert_id_for`), so the same event processed twice can never make
two alerts. An event id is unique per device only as long as the device keeps its
counter: a new event that re-uses an id (another type or device time) is told apart by
`same_event` and keyed by `trygg.contract.rekeyed_id` (docs/ingest.md "Re-used ids").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from trygg.alert import Alert, Transition, rfc3339, utc
from trygg.contract import AlertKind, Event, Priority
from trygg.pipeline import AlertIntent

#: Kinds whose flood control is per device: two silent devices are two alerts.
PER_DEVICE_KINDS: Final = frozenset({AlertKind.DEVICE_OFFLINE, AlertKind.BATTERY_LOW})

#: The team of an alert whose resident is not in the registry (a registry reload raced
#: the rules). The alert is still raised; operators see it in the dashboard.
UNASSIGNED_TEAM: Final = "unassigned"

#: Actors recorded in transitions besides staff usernames.
SYSTEM: Final = "system"
RESIDENT: Final = "resident"

#: How many attached sources an alert remembers to recognise a re-processed event.
SOURCES_KEPT: Final = 64

Source = tuple[str, str]
FloodKey = tuple[str, AlertKind, str | None]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

_PRIORITY_RANK: Final = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


def alert_id_for(kind: AlertKind | str, source: Source) -> str:
    """`a-` and 20 hex digits of sha256("kind|device_id|event_id")."""
    digest = hashlib.sha256(f"{kind}|{source[0]}|{source[1]}".encode()).hexdigest()
    return "a-" + digest[:20]


def source_key(source: Source, event: Event | None = None) -> str:
    """How an alert remembers an attached source: `device_id|event_id`, and when the
    source is `event`'s own (its id, or the id it was re-keyed to) also `|type|ts`
    (device time, UTC microseconds), so that a new event re-using the id is not taken
    for the one that attached."""
    key = f"{source[0]}|{source[1]}"
    if event is None:
        return key
    return f"{key}|{event.type}|{(utc(event.ts) - _EPOCH) // _MICROSECOND}"


def same_event(ref: dict[str, Any], event: Event) -> bool:
    """True if the `trigger` / `last_event` object `ref` names `event`: same type and
    device time (the id is the caller's). A reference that is not an event's (a timer
    alert: type null) or cannot be read is not the same event."""
    if ref.get("type") != event.type.value:
        return False
    at = ref_time(ref, "ts")
    return at is not None and at == event.ts


def ref_time(ref: dict[str, Any], field_name: str) -> datetime | None:
    """A time of a `trigger` / `last_event` object, or None if it is missing or unreadable."""
    value = ref.get(field_name)
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return utc(at)


def flood_key(resident_id: str, kind: AlertKind, device_id: str | None) -> FloodKey:
    """Alerts with the same key share one unresolved alert (flood control)."""
    return (resident_id, kind, device_id if kind in PER_DEVICE_KINDS else None)


def higher(a: Priority, b: Priority) -> Priority:
    return a if _PRIORITY_RANK[a] >= _PRIORITY_RANK[b] else b


def event_ref(intent: AlertIntent) -> dict[str, Any]:
    """The `trigger` / `last_event` object of an intent.

    An intent from a timer (door open too long, device silent, ...) has no event of its
    own: its reference names the source and has `type` null, with `ts` and
    `received_at` the time the rule decided.
    """
    if intent.event is not None:
        return intent.event.ref()
    at = rfc3339(intent.at)
    return {"device_id": intent.source[0], "event_id": intent.source[1], "type": None,
            "ts": at, "received_at": at}


class ChangeReason(StrEnum):
    """Why an alert was (re)published."""

    OPENED = "opened"
    ATTACHED = "attached"  # flood control: another trigger joined the alert
    ESCALATED = "escalated"  # reached the next team of the chain
    REMINDED = "reminded"  # end of the chain: published again with a higher level
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    REPUBLISHED = "republished"  # the same state again (after a broker reconnect)


@dataclass(frozen=True, slots=True)
class Change:
    """One published state of an alert, with the transitions that led to it."""

    reason: ChangeReason
    alert: Alert
    transitions: tuple[Transition, ...] = ()

    @property
    def wire(self) -> dict[str, Any]:
        """The alert's contract JSON after the change."""
        return self.alert.wire()

    @property
    def final(self) -> bool:
        """Resolved or cancelled: published once more, then cleared from the broker."""
        return self.alert.closed

    @property
    def teams(self) -> tuple[str, ...]:
        return self.alert.teams


def alert_flood_key(alert: Alert) -> FloodKey:
    return flood_key(alert.resident_id, alert.kind, alert.device_id)


__all__ = [
    "PER_DEVICE_KINDS",
    "RESIDENT",
    "SOURCES_KEPT",
    "SYSTEM",
    "UNASSIGNED_TEAM",
    "Alert",
    "Change",
    "ChangeReason",
    "FloodKey",
    "Source",
    "Transition",
    "alert_flood_key",
    "alert_id_for",
    "event_ref",
    "flood_key",
    "higher",
    "ref_time",
    "same_event",
    "source_key",
]
