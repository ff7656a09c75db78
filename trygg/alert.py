"""An alert: its state at one moment (docs/contract.md "Alerts"), and its forms.

`Alert` is the one shape of an alert in Trygg. The alert service holds one per alert
and replaces it at every change (it is frozen: a change hands out the alert as it is,
and the publisher, the subscribers and the database writer may keep it on any thread).
Dicts inside it (`trigger`, `last_event`, `location`, `detail`) are replaced, never
changed in place.

Its forms:

- the MQTT payload (`wire` / `wire_payload`): exactly the alert JSON of the contract,
  times in UTC with an explicit offset;
- the stored record (`record` / `from_record`): every field, as the database row
  `trygg.alerts` and the alert journal hold it (times as `datetime`; the journal writes
  them as ISO 8601 text);
- the API's JSON: pydantic serialises the dataclass (the dashboard's response model):
  the wire fields and `teams`; the fields marked `Hidden` stay inside Trygg.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import Field

from trygg.contract import AlertKind, AlertState, Priority, dumps

#: Alerts that are not resolved or cancelled.
ACTIVE_STATES: Final = frozenset({AlertState.OPEN, AlertState.ACKNOWLEDGED})

#: Kept inside Trygg: not in the API's JSON nor in its schema.
Hidden: Final = Field(exclude=True)


def utc(at: datetime) -> datetime:
    """The time in UTC; a naive time (a caller's bug) is taken as UTC rather than losing an alert."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def rfc3339(at: datetime) -> str:
    """An RFC 3339 time with an explicit offset, in UTC."""
    return utc(at).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert as it is now. The first sixteen fields are the contract's alert JSON."""

    alert_id: str
    resident_id: str
    #: the resident's team: where the alert was raised
    team_id: str
    kind: AlertKind
    priority: Priority
    state: AlertState
    opened_at: datetime
    updated_at: datetime
    event_count: int = 1
    #: the event (or timer) that raised it, and the newest one attached to it
    trigger: dict[str, Any] = field(default_factory=dict)
    last_event: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] | None = None
    escalation_level: int = 0
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    note: str | None = None
    #: every team it has been published to, the resident's team first
    teams: tuple[str, ...] = ()
    acknowledged_at: Annotated[datetime | None, Hidden] = None
    resolved_at: Annotated[datetime | None, Hidden] = None
    #: when it was resolved or cancelled
    closed_at: Annotated[datetime | None, Hidden] = None
    #: when it last escalated (or opened): the escalation timer counts from here
    escalated_at: Annotated[datetime | None, Hidden] = None
    #: the device of a device_offline / battery_low alert
    device_id: Annotated[str | None, Hidden] = None
    #: what the rule said about it (door name, auto-alarm source, confidence, ...)
    detail: Annotated[dict[str, Any], Hidden] = field(default_factory=dict)
    #: the newest sources attached, as "device_id|event_id", with "|type|ts" for an
    #: event's own key; a re-processed one is ignored
    sources: Annotated[tuple[str, ...], Hidden] = ()
    #: changes so far; a stored row is replaced only by a newer version
    version: Annotated[int, Hidden] = 1
    #: transitions recorded so far (the next one gets this number)
    transition_count: Annotated[int, Hidden] = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def closed(self) -> bool:
        return not self.active

    def wire(self) -> dict[str, Any]:
        """Exactly the alert JSON of the contract (what handhelds and webhooks receive)."""
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

    def wire_payload(self) -> bytes:
        """The MQTT payload: `wire` as compact UTF-8 JSON."""
        return dumps(self.wire())

    def record(self) -> dict[str, Any]:
        """Every field by name, as stored: enums as text, `teams` and `sources` as lists,
        `escalated_at` never empty (the opening counts)."""
        rec = {name: getattr(self, name) for name in RECORD_FIELDS}
        rec["kind"] = self.kind.value
        rec["priority"] = self.priority.value
        rec["state"] = self.state.value
        rec["teams"] = list(self.teams)
        rec["sources"] = list(self.sources)
        rec["escalated_at"] = self.escalated_at or self.opened_at
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Alert:
        """An alert from its `record` (a database row, or a journal record whose times
        are ISO 8601 text). Raises KeyError, ValueError or TypeError for one it cannot read."""
        values = {name: rec[name] for name in RECORD_FIELDS if name in rec}
        for name in TIME_FIELDS:
            value = values.get(name)
            if isinstance(value, str):
                values[name] = datetime.fromisoformat(value)
        values["kind"] = AlertKind(rec["kind"])
        values["priority"] = Priority(rec["priority"])
        values["state"] = AlertState(rec["state"])
        values["teams"] = tuple(rec.get("teams") or ())
        values["sources"] = tuple(rec.get("sources") or ())
        values["detail"] = dict(rec.get("detail") or {})
        return cls(**values)


#: The fields of the stored record (the columns of trygg.alerts), in order.
RECORD_FIELDS: Final = tuple(f.name for f in fields(Alert))
TIME_FIELDS: Final = ("opened_at", "updated_at", "acknowledged_at", "resolved_at", "closed_at", "escalated_at")


@dataclass(frozen=True, slots=True)
class Transition:
    """One lifecycle step of an alert (a row of trygg.alert_transitions); `from_state`
    None is the opening. Escalation steps are recorded with `from_state == to_state`
    and the team in the note."""

    alert_id: str
    seq: int
    at: datetime
    from_state: AlertState | None
    to_state: AlertState
    actor: str
    note: str | None = None


__all__ = ["ACTIVE_STATES", "RECORD_FIELDS", "TIME_FIELDS", "Alert", "Hidden", "Transition", "rfc3339", "utc"]
