"""What every rule is given and gives back: resident settings, timers, intents.

A rule is a pure function ``(ctx, state, input, now) -> (new state, intents, timers)``:

- `ResidentContext` is the resident's registry entry compiled for the rules (time zone,
  night window, settings, safe zones, devices). It is read-only data.
- ``state`` is a frozen dataclass of the rule family; rules return a new one.
- intents are `trygg.pipeline.AlertIntent`s for the alerts stage.
- timers are `Timer` requests: arm `key` at `at`, or cancel it when `at` is None. The
  `Processor` applies them to its single `Scheduler` and calls the rule back when a
  deadline passes; rules never read the clock or sleep.

Times: ``now`` is the processing time handed in by the caller. The time of an event is
its device time stamp, but never later than ``now`` (`event_time`): a device clock that
runs ahead must not postpone an alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar
from zoneinfo import ZoneInfo

from processors.geofence import ZoneSet
from processors.localtime import as_utc, in_window, local, zone
from trygg.contract import MISSED_HEARTBEATS, AlertKind, DeviceKind, Event, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Device, LocationBasis, Resident, ResidentSettings

S = TypeVar("S")

#: (device_id, event_id) of the event that started a condition, or a deterministic marker
Source: TypeAlias = tuple[str, str]

PRIORITY: Final[Mapping[AlertKind, Priority]] = MappingProxyType(
    {
        AlertKind.SMOKE: Priority.CRITICAL,
        AlertKind.ALARM: Priority.HIGH,
        AlertKind.FALL: Priority.HIGH,
        AlertKind.WANDERING: Priority.HIGH,
        AlertKind.GEOFENCE_EXIT: Priority.HIGH,
        AlertKind.DOOR_OPEN: Priority.MEDIUM,
        AlertKind.INACTIVITY: Priority.MEDIUM,
        AlertKind.DEVICE_OFFLINE: Priority.MEDIUM,  # HIGH for alarm units, see rules_devices
        AlertKind.BATTERY_LOW: Priority.LOW,
    }
)

#: an `offline` status raises device_offline only if the device is still offline this
#: much later (setting TRYGG_OFFLINE_DEBOUNCE_S; docs/rules.md says why 60 s)
OFFLINE_DEBOUNCE: Final = timedelta(seconds=60)


class TimerKey(NamedTuple):
    """A timer of the processors; JSON-friendly (a list of three strings)."""

    rule: str  # HEARTBEAT, DOOR, WANDER or INACTIVITY
    owner: str  # device id for heartbeats, resident id otherwise
    sub: str = ""  # the door for door timers


HEARTBEAT: Final = "heartbeat"
DOOR: Final = "door"
WANDER: Final = "wander"
INACTIVITY: Final = "inactivity"


class Timer(NamedTuple):
    """Arm `key` at `at`; `at` None cancels it."""

    key: TimerKey
    at: datetime | None


class DeviceInfo(NamedTuple):
    """A registered device as the rules need it: one shared value per kind and heartbeat
    (it holds nothing of the device itself, so 500,000 devices need a handful)."""

    kind: DeviceKind
    heartbeat_s: float
    silence_limit: timedelta  # MISSED_HEARTBEATS × heartbeat_s
    offline_debounce: timedelta = OFFLINE_DEBOUNCE  # how long an `offline` status must hold


Step: TypeAlias = tuple[S, list[AlertIntent], list[Timer]]


@dataclass(frozen=True, slots=True)
class ResidentContext:
    """One resident's registry entry as the rules need it."""

    resident_id: str
    tz: ZoneInfo
    night_start: time
    night_end: time
    settings: ResidentSettings
    zones: ZoneSet | None  # None: the resident has no safe zones, no geofence alerts
    location_basis: LocationBasis | None
    devices: Mapping[str, DeviceInfo]
    #: residents with a motion or door sensor are watched for inactivity
    watches_inactivity: bool

    @classmethod
    def of(cls, resident: Resident, *, offline_debounce: timedelta = OFFLINE_DEBOUNCE) -> ResidentContext:
        devices = {d.id: device_info(d, offline_debounce) for d in resident.devices}
        kinds = {info.kind for info in devices.values()}
        return cls(
            resident_id=resident.id,
            tz=zone(resident.timezone),
            night_start=_wall_time(resident.night.start),
            night_end=_wall_time(resident.night.end),
            settings=resident.settings,
            zones=ZoneSet(resident.safe_zones) if resident.safe_zones else None,
            location_basis=resident.location_basis,
            devices=MappingProxyType(devices),
            watches_inactivity=bool(kinds & {DeviceKind.MOTION_SENSOR, DeviceKind.DOOR_SENSOR}),
        )

    def in_night(self, instant: datetime) -> bool:
        return in_window(instant, self.night_start, self.night_end, self.tz)

    def local_date(self, instant: datetime) -> date:
        return local(instant, self.tz).date()

    def may_use_location(self, instant: datetime) -> bool:
        """docs/contract.md#7-privacy-and-lawful-care: positions are used only with a location basis valid that day."""
        basis = self.location_basis
        return basis is not None and basis.valid_on(self.local_date(instant))

    def device_kind(self, device_id: str) -> DeviceKind | None:
        device = self.devices.get(device_id)
        return None if device is None else device.kind


_KINDS: Final = {kind.value: kind for kind in DeviceKind}


@lru_cache(maxsize=1024)
def _wall_time(hhmm: str) -> time:
    return time.fromisoformat(hhmm)


def device_info(device: Device, offline_debounce: timedelta = OFFLINE_DEBOUNCE) -> DeviceInfo:
    return _device_info(device.kind, device.heartbeat_s, offline_debounce)


@lru_cache(maxsize=1024)
def _device_info(kind: str, heartbeat_s: float, offline_debounce: timedelta) -> DeviceInfo:
    return DeviceInfo(_KINDS[kind], heartbeat_s, timedelta(seconds=heartbeat_s * MISSED_HEARTBEATS),
                      offline_debounce)


def heartbeat_key(device_id: str) -> TimerKey:
    return TimerKey(HEARTBEAT, device_id)


def event_time(event: Event, now: datetime) -> datetime:
    """When the event happened, in UTC: its device time, clamped to `now`."""
    ts, now = as_utc(event.ts), as_utc(now)
    return ts if ts < now else now


def source_of(event: Event) -> Source:
    return (event.device_id, event.event_id)


def _intent(
    action: IntentAction,
    ctx: ResidentContext,
    kind: AlertKind,
    now: datetime,
    source: Source,
    event: Event | None,
    device_id: str | None,
    location: dict[str, Any] | None,
    detail: dict[str, Any] | None,
    priority: Priority | None,
    only_if_open: bool = False,
) -> AlertIntent:
    return AlertIntent(
        action=action,
        resident_id=ctx.resident_id,
        kind=kind,
        priority=priority or PRIORITY[kind],
        at=now,
        source=source,
        event=event,
        device_id=device_id,
        location=location,
        detail=detail or {},
        only_if_open=only_if_open,
    )


def open_intent(
    ctx: ResidentContext,
    kind: AlertKind,
    now: datetime,
    source: Source,
    *,
    event: Event | None = None,
    device_id: str | None = None,
    location: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    priority: Priority | None = None,
) -> AlertIntent:
    return _intent(IntentAction.OPEN, ctx, kind, now, source, event, device_id, location, detail, priority)


def cancel_intent(
    ctx: ResidentContext,
    kind: AlertKind,
    now: datetime,
    source: Source,
    *,
    event: Event | None = None,
    device_id: str | None = None,
    location: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    only_if_open: bool = False,
    priority: Priority | None = None,
) -> AlertIntent:
    return _intent(IntentAction.CANCEL, ctx, kind, now, source, event, device_id, location, detail, priority,
                   only_if_open)
