"""Alarms raised by a single event: smoke, safety alarm (button or auto), fall.

These rules keep no state. Every triggering event is its own condition:

- ``smoke.detected`` → OPEN ``smoke`` (critical). ``smoke.cleared`` changes nothing: a
  smoke alert ends only when staff resolve it.
- ``alarm.button`` and ``alarm.auto`` → OPEN ``alarm`` (high), for *every* press, so the
  alerts stage republishes an attached press at once (docs/contract.md#4-rules-and-alerts).
- ``fall.detected`` → OPEN ``fall`` (high).
- ``alarm.cancel`` → CANCEL ``alarm`` and CANCEL ``fall`` with ``only_if_open=True``:
  the alerts stage cancels the resident's unresolved alert of that kind only if nobody
  has acknowledged it yet, and only if it was raised at or before the cancel and not
  long before it (`alerts.service.covers`: it compares the cancel's event, carried in
  the intent, with the alert's trigger).

The `source` of each intent is the event's own ``(device_id, event_id)``. The alerts
stage attaches it to the unresolved alert of the same resident and kind if there is one,
and otherwise derives the new alert's id from it; a re-processed event therefore maps to
the same alert, and a press after an alert was resolved can never be mistaken for the
old one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from processors.context import ResidentContext, cancel_intent, open_intent, source_of
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent

TRIGGERS: Final[dict[EventType, AlertKind]] = {
    EventType.SMOKE_DETECTED: AlertKind.SMOKE,
    EventType.ALARM_BUTTON: AlertKind.ALARM,
    EventType.ALARM_AUTO: AlertKind.ALARM,
    EventType.FALL_DETECTED: AlertKind.FALL,
}

#: kinds that `alarm.cancel` cancels (if not yet acknowledged)
CANCELLABLE: Final = (AlertKind.ALARM, AlertKind.FALL)

#: the event types these rules look at
EVENT_TYPES: Final = frozenset({*TRIGGERS, EventType.ALARM_CANCEL})


def on_event(ctx: ResidentContext, event: Event, now: datetime) -> list[AlertIntent]:
    """The intents of one event; stateless, so there is no state or timer to return."""
    kind = TRIGGERS.get(event.type)
    if kind is not None:
        detail = _detail(event)
        return [open_intent(ctx, kind, now, source_of(event), event=event, detail=detail)]
    if event.type is EventType.ALARM_CANCEL:
        return [cancel_intent(ctx, k, now, source_of(event), event=event, only_if_open=True) for k in CANCELLABLE]
    return []


def _detail(event: Event) -> dict[str, object]:
    if event.type is EventType.ALARM_AUTO:
        return {"auto_source": event.data.get("source", "other")}
    if event.type is EventType.FALL_DETECTED and "confidence" in event.data:
        return {"confidence": event.data["confidence"]}
    return {}
