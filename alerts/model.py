"""The alert and its wire form (DESIGN.md §3), transitions, and what a change carries.

`Alert` is mutable and owned by `AlertService`; everything handed out of the service (a
`Change`) holds a *copy*, so the publisher, the subscribers and the database writer can
read it on other threads while the service goes on. Collections inside an alert are
tuples or dicts that are replaced, never changed in place, so a shallow copy is enough.

Ids: an alert's id is derived from the kind and the `(device_id, event_id)` source of the
intent that opened it (`alert_id_for`), so the same event processed twice can never make
two alerts. An event id is unique per device only as long as the device keeps its
counter: a new event that re-uses an id (another type or device time) is told apart by
`same_event` and keyed by `trygg.contract.rekeyed_id` (docs/ingest.md "Re-used ids").
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from trygg.contract import AlertKind, AlertState, Event, Priority
from trygg.pipeline import AlertIntent

#: Kinds whose flood control is per device: two silent devices are two alerts.
PER_DEVICE_KINDS: Final = frozenset({AlertKind.DEVICE_OFFLINE, AlertKind.BATTERY_LOW})

#: Alerts that are not resolved or cancelled.
ACTIVE_STATES: Final = frozenset({AlertState.OPEN, AlertState.ACKNOWLEDGED})

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


def utc(at: datetime) -> datetime:
    """The time in UTC; a naive time (a caller's bug) is taken as UTC rather than losing an alert."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def rfc3339(at: datetime) -> str:
    """An RFC 3339 time with an explicit offset, in UTC."""
    return utc(at).isoformat()


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


@dataclass(frozen=True, slots=True)
class Transition:
    """One lifecycle step of an alert; `from_state` None is the opening. Escalation steps
    are recorded with `from_state == to_state` and the team in the note."""

    alert_id: str
    seq: int
    at: datetime
    from_state: AlertState | None
    to_state: AlertState
    actor: str
    note: str | None = None


@dataclass(slots=True)
class Alert:
    alert_id: str
    resident_id: str
    team_id: str
    kind: AlertKind
    priority: Priority
    state: AlertState
    opened_at: datetime
    updated_at: datetime
    event_count: int
    trigger: dict[str, Any]
    last_event: dict[str, Any]
    location: dict[str, Any] | None = None
    escalation_level: int = 0
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    note: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    #: when it was resolved or cancelled
    closed_at: datetime | None = None
    #: every team it has been published to, the resident's team first
    teams: tuple[str, ...] = ()
    #: the device of a device_offline / battery_low alert
    device_id: str | None = None
    #: when it last escalated (or opened): the escalation timer counts from here
    escalated_at: datetime | None = None
    #: what the rule said about it (door name, auto-alarm source, confidence, ...)
    detail: dict[str, Any] = field(default_factory=dict)
    #: the newest sources attached, as "device_id|event_id", with "|type|ts" for an event's
    #: own key (`source_key`); a re-processed one is ignored
    sources: tuple[str, ...] = ()
    #: changes so far; orders the stored rows
    version: int = 1
    #: transitions recorded so far (the next one gets this number)
    transitions_seq: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def closed(self) -> bool:
        return not self.active

    @property
    def flood_key(self) -> FloodKey:
        return flood_key(self.resident_id, self.kind, self.device_id)

    def snapshot(self) -> Alert:
        return copy.copy(self)

    def to_wire(self) -> dict[str, Any]:
        """Exactly the alert JSON of DESIGN.md §3."""
        return {
            "alert_id": self.alert_id,
            "resident_id": self.resident_id,
            "team_id": self.team_id,
            "kind": self.kind.value,
            "priority": self.priority.value,
            "state": self.state.value,
            "opened_at": rfc3339(self.opened_at),
            "updated_at": rfc3339(self.updated_at),
            "event_count": self.event_count,
            "trigger": dict(self.trigger),
            "last_event": dict(self.last_event),
            "location": None if self.location is None else dict(self.location),
            "escalation_level": self.escalation_level,
            "acknowledged_by": self.acknowledged_by,
            "resolved_by": self.resolved_by,
            "note": self.note,
        }


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
    alert: Alert  # a snapshot, never the service's own object
    transitions: tuple[Transition, ...] = ()
    wire: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, reason: ChangeReason, alert: Alert, transitions: tuple[Transition, ...] = ()) -> Change:
        snap = alert.snapshot()
        return cls(reason, snap, transitions, snap.to_wire())

    @property
    def final(self) -> bool:
        """Resolved or cancelled: published once more, then cleared from the broker."""
        return self.alert.closed

    @property
    def teams(self) -> tuple[str, ...]:
        return self.alert.teams


__all__ = [
    "ACTIVE_STATES",
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
    "alert_id_for",
    "event_ref",
    "flood_key",
    "higher",
    "ref_time",
    "rfc3339",
    "same_event",
    "source_key",
    "utc",
]
