"""The typed hand-offs between stages (docs/contract.md#2-layout-and-data-flow).

gateway → processors: every valid `Event` and every `DeviceStatus`, through an
`EventSink`, called from the gateway's receiving thread *before* the database commit.
A sink must not block: it hands the item to its own loop or queue and returns.

processors → alerts: `AlertIntent`s (open / attach / cancel).

Two ports run against that flow; the composition root (composition/app.py) wires them:

- alerts → processors: `AlertClosed`. Staff resolved an alert, so the rules that
  raised it may raise it again (the processors stage implements it).
- alerts → gateway: `EmergencyState`. Whether a resident has an open or acknowledged
  alarm or fall alert: their positions are then used even without a location basis
  (docs/privacy.md). The gateway asks it for every position it receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from trygg.contract import AlertKind, Event, Priority


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's `online` / `offline` status message (MQTT Last Will)."""

    device_id: str
    resident_id: str
    online: bool
    received_at: datetime


class EventSink(Protocol):
    def __call__(self, item: Event | DeviceStatus) -> None: ...


def discard(item: Event | DeviceStatus) -> None:
    """A sink that does nothing with what it gets (the gateway run alone)."""


class AlertClosed(Protocol):
    """Told when staff resolve an alert (called on the alert stage's loop)."""

    def alert_closed(self, resident_id: str, kind: AlertKind, device_id: str | None) -> None: ...


class EmergencyState(Protocol):
    """Whether an alarm or fall alert of a resident is open or acknowledged. Asked from
    the gateway's receiving thread for every position: it must answer at once."""

    def emergency_open(self, resident_id: str) -> bool: ...


class NoEmergencies:
    """`EmergencyState` of a gateway run without the alerts stage: no alert is open."""

    def emergency_open(self, resident_id: str) -> bool:
        return False


NO_EMERGENCIES: EmergencyState = NoEmergencies()


class IntentAction(StrEnum):
    OPEN = "open"  # raise an alert, or attach to the unresolved one of the same resident+kind
    CANCEL = "cancel"  # the condition ended (resident back, device heard again, ...)


@dataclass(frozen=True, slots=True)
class AlertIntent:
    """What a rule wants done; the alerts stage owns ids, lifecycle and delivery."""

    action: IntentAction
    resident_id: str
    kind: AlertKind
    priority: Priority
    at: datetime
    #: deterministic origin of the alert, e.g. (device_id, event_id) of the event that
    #: started the condition; the alert id is derived from it and `kind`, so the same
    #: condition re-processed after a restart can never make a second alert
    source: tuple[str, str]
    event: Event | None = None  # the triggering / attaching event, None for timer alerts
    device_id: str | None = None  # for device_offline / battery_low: which device
    location: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: for CANCEL of alarm/fall by `alarm.cancel`: only if not yet acknowledged
    only_if_open: bool = False


def intent_to_wire(intent: AlertIntent) -> dict[str, Any]:
    """An intent as JSON, for `trygg processors` and `trygg alerts` run as two processes."""
    ev = intent.event
    return {
        "action": intent.action.value, "resident_id": intent.resident_id, "kind": intent.kind.value,
        "priority": intent.priority.value, "at": intent.at.isoformat(), "source": list(intent.source),
        "event": None if ev is None else {
            "device_id": ev.device_id, "event_id": ev.event_id, "type": ev.type.value,
            "ts": ev.ts.isoformat(), "received_at": ev.received_at.isoformat(), "data": ev.data,
            "resident_id": ev.resident_id},
        "device_id": intent.device_id, "location": intent.location, "detail": intent.detail,
        "only_if_open": intent.only_if_open,
    }


def intent_from_wire(doc: dict[str, Any]) -> AlertIntent:
    from trygg.contract import EventType

    ev = doc.get("event")
    event = None if ev is None else Event(
        ev["device_id"], ev["event_id"], EventType(ev["type"]), datetime.fromisoformat(ev["ts"]),
        datetime.fromisoformat(ev["received_at"]), ev["data"], ev["resident_id"])
    return AlertIntent(
        IntentAction(doc["action"]), doc["resident_id"], AlertKind(doc["kind"]), Priority(doc["priority"]),
        datetime.fromisoformat(doc["at"]), (doc["source"][0], doc["source"][1]), event,
        doc.get("device_id"), doc.get("location"), doc.get("detail") or {}, bool(doc.get("only_if_open")))


def internal_topic(prefix: str, name: str) -> str:
    """Topics between Trygg's own processes: `{prefix}/internal/intents`, `/alert-closed`."""
    return f"{prefix}/internal/{name}"


def item_to_wire(item: Event | DeviceStatus) -> bytes:
    """A valid event or status as JSON, between Trygg's instances (the cluster's
    `TRYGG_RESIDENTS`, docs/cluster.md). The event's payload text goes as it came."""
    import json

    if isinstance(item, DeviceStatus):
        return json.dumps({"status": item.online, "device_id": item.device_id, "resident_id": item.resident_id,
                           "received_at": item.received_at.isoformat()}, separators=(",", ":")).encode()
    return json.dumps({"device_id": item.device_id, "event_id": item.event_id, "type": item.type.value,
                       "ts": item.ts.isoformat(), "received_at": item.received_at.isoformat(), "data": item.data,
                       "resident_id": item.resident_id, "text": item.text}, separators=(",", ":")).encode()


def item_from_wire(payload: bytes) -> Event | DeviceStatus:
    """The item `item_to_wire` wrote; KeyError, ValueError or TypeError if it is not one."""
    import json

    from trygg.contract import EventType

    doc = json.loads(payload)
    if "status" in doc:
        return DeviceStatus(doc["device_id"], doc["resident_id"], bool(doc["status"]),
                            datetime.fromisoformat(doc["received_at"]))
    return Event(doc["device_id"], doc["event_id"], EventType(doc["type"]), datetime.fromisoformat(doc["ts"]),
                 datetime.fromisoformat(doc["received_at"]), doc["data"], doc["resident_id"], doc.get("text", ""))
