"""The typed hand-offs between stages (DESIGN.md §2).

gateway → processors: every valid `Event` and every `DeviceStatus`, through an
`EventSink`, called from the gateway's receiving thread *before* the database commit.
A sink must not block: it hands the item to its own loop or queue and returns.

processors → alerts: `AlertIntent`s (open / attach / cancel).
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
