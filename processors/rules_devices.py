"""Device health: ``device_offline`` (heartbeat supervision) and ``battery_low``.

device_offline (high for an ``alarm_unit``, medium for other kinds)
    Every message from a device — any event, or status ``online`` — is *hearing* it:
    its heartbeat timer is re-armed to (time heard) + 3 × ``heartbeat_s`` (time heard is the
    gateway's ``received_at``, never later than now). If the timer passes, or status
    ``offline`` arrives (MQTT Last Will), the device is offline. Hearing it again cancels.
    Source: ``(device_id, "offline@<UTC time last heard>")``, or
    ``(device_id, "offline@never")`` for a device not heard since it was registered — the
    same silence always gives the same source, also after a restart.

battery_low (low)
    ``battery.low``, or any event whose ``data.battery_pct`` < 15 → OPEN (once per
    episode). Cancelled when an event reports ``battery_pct`` ≥ 30 (hysteresis: readings
    from 15 to 29 change nothing). Source: the event that first reported the low battery.

Several devices of one resident share that resident's alert of a kind (see `tracking`):
the alert opens with the first device and is cancelled when the last one recovers.
Staff resolving an alert silences the devices it covered until they recover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from processors.context import (
    ResidentContext,
    Source,
    Step,
    Timer,
    TimerKey,
    cancel_intent,
    heartbeat_key,
    open_intent,
    source_of,
)
from processors.jsonstate import dump_time, flag, obj, opt_number, opt_time
from processors.localtime import as_utc, isoformat_utc
from processors.tracking import NO_PARTS, PerPart
from trygg.contract import AlertKind, DeviceKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, DeviceStatus

BATTERY_LOW_BELOW: Final = 15.0
BATTERY_OK_FROM: Final = 30.0


class DeviceWatch(NamedTuple):
    """What is known about one device (a tuple: heartbeats create one per message)."""

    last_heard: datetime | None = None
    reported_offline: bool = False  # status "offline" received, not heard since
    battery_pct: float | None = None


_UNHEARD: Final = DeviceWatch()
_NO_DEVICES: Mapping[str, DeviceWatch] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DevicesState:
    devices: Mapping[str, DeviceWatch] = field(default_factory=lambda: _NO_DEVICES)
    offline: PerPart = NO_PARTS  # one alert per device
    battery: PerPart = NO_PARTS

    def watch(self, device_id: str) -> DeviceWatch:
        return self.devices.get(device_id, _UNHEARD)

    def with_watch(self, device_id: str, watch: DeviceWatch) -> DevicesState:
        devices = dict(self.devices)
        devices[device_id] = watch
        return DevicesState(MappingProxyType(devices), self.offline, self.battery)

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": {
                device_id: {
                    "last_heard": dump_time(w.last_heard),
                    "reported_offline": w.reported_offline,
                    "battery_pct": w.battery_pct,
                }
                for device_id, w in sorted(self.devices.items())
            },
            "offline": self.offline.to_json(),
            "battery": self.battery.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> DevicesState:
        fields = obj(doc, path)
        devices: dict[str, DeviceWatch] = {}
        for device_id, raw in obj(fields.get("devices"), f"{path}.devices").items():
            p = f"{path}.devices.{device_id}"
            w = obj(raw, p)
            devices[device_id] = DeviceWatch(
                last_heard=opt_time(w, "last_heard", p),
                reported_offline=flag(w, "reported_offline", p),
                battery_pct=opt_number(w, "battery_pct", p),
            )
        return cls(
            devices=MappingProxyType(devices),
            offline=PerPart.from_json(fields.get("offline", {}), f"{path}.offline"),
            battery=PerPart.from_json(fields.get("battery", {}), f"{path}.battery"),
        )


def offline_priority(ctx: ResidentContext, device_id: str) -> Priority:
    return Priority.HIGH if ctx.device_kind(device_id) is DeviceKind.ALARM_UNIT else Priority.MEDIUM


def offline_source(device_id: str, last_heard: datetime | None) -> Source:
    marker = "never" if last_heard is None else isoformat_utc(last_heard)
    return (device_id, f"offline@{marker}")


def battery_pct(event: Event) -> float | None:
    value = event.data.get("battery_pct")
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _heard_at(watch: DeviceWatch, received_at: datetime, now: datetime) -> datetime:
    heard, now = as_utc(received_at), as_utc(now)
    if heard > now:
        heard = now
    last = watch.last_heard
    return last if last is not None and last > heard else heard


def on_event(ctx: ResidentContext, state: DevicesState, event: Event, now: datetime) -> Step[DevicesState]:
    """Every event: the device is heard (heartbeat re-armed) and may report its battery.

    This runs for every message of every device, so it builds one new watch and one new
    state and nothing else unless an alert changes.
    """
    device_id = event.device_id
    watch = state.devices.get(device_id, _UNHEARD)
    heard = _heard_at(watch, event.received_at, now)
    pct = battery_pct(event)
    devices = dict(state.devices)
    devices[device_id] = DeviceWatch(heard, False, watch.battery_pct if pct is None else pct)
    info = ctx.devices.get(device_id)
    timers = [] if info is None else [Timer(heartbeat_key(device_id), heard + info.silence_limit)]
    intents: list[AlertIntent] = []
    offline, battery = state.offline, state.battery
    if offline.holds(device_id):
        offline, ended = offline.end(device_id)
        if ended is not None:
            priority = offline_priority(ctx, device_id)
            intents.append(
                cancel_intent(
                    ctx, AlertKind.DEVICE_OFFLINE, now, ended, event=event, device_id=device_id, priority=priority
                )
            )
    if event.type is EventType.BATTERY_LOW or (pct is not None and pct < BATTERY_LOW_BELOW):
        if not battery.holds(device_id):
            battery, _ = battery.start(device_id, source_of(event))
            detail = {"battery_pct": pct}
            intents.append(
                open_intent(
                    ctx, AlertKind.BATTERY_LOW, now, source_of(event), event=event, device_id=device_id, detail=detail
                )
            )
    elif pct is not None and pct >= BATTERY_OK_FROM and battery.holds(device_id):
        battery, ended = battery.end(device_id)
        if ended is not None:
            detail = {"battery_pct": pct}
            intents.append(
                cancel_intent(ctx, AlertKind.BATTERY_LOW, now, ended, event=event, device_id=device_id, detail=detail)
            )
    return DevicesState(MappingProxyType(devices), offline, battery), intents, timers


def on_status(ctx: ResidentContext, state: DevicesState, status: DeviceStatus, now: datetime) -> Step[DevicesState]:
    device_id = status.device_id
    watch = state.watch(device_id)
    info = ctx.devices.get(device_id)
    if status.online:
        heard = _heard_at(watch, status.received_at, now)
        state = state.with_watch(device_id, DeviceWatch(heard, False, watch.battery_pct))
        timers = [] if info is None else [Timer(heartbeat_key(device_id), heard + info.silence_limit)]
        offline, ended = state.offline.end(device_id)
        if ended is None:
            return DevicesState(state.devices, offline, state.battery), [], timers
        intent = cancel_intent(
            ctx,
            AlertKind.DEVICE_OFFLINE,
            now,
            ended,
            device_id=device_id,
            priority=offline_priority(ctx, device_id),
            detail={"reason": "status online"},
        )
        return DevicesState(state.devices, offline, state.battery), [intent], timers
    state = state.with_watch(device_id, DeviceWatch(watch.last_heard, True, watch.battery_pct))
    cancel = [] if info is None else [Timer(heartbeat_key(device_id), None)]
    return _went_offline(ctx, state, device_id, watch.last_heard, now, "status offline", cancel)


def on_timer(ctx: ResidentContext, state: DevicesState, key: TimerKey, now: datetime) -> Step[DevicesState]:
    device_id = key.owner
    info = ctx.devices.get(device_id)
    watch = state.watch(device_id)
    if info is None or watch.reported_offline:
        return state, [], []
    if watch.last_heard is not None and watch.last_heard + info.silence_limit > now:
        return state, [], [Timer(key, watch.last_heard + info.silence_limit)]  # heard meanwhile
    return _went_offline(ctx, state, device_id, watch.last_heard, now, "silent", [])


def _went_offline(
    ctx: ResidentContext,
    state: DevicesState,
    device_id: str,
    last_heard: datetime | None,
    now: datetime,
    reason: str,
    timers: list[Timer],
) -> Step[DevicesState]:
    source = offline_source(device_id, last_heard)
    offline, fresh = state.offline.start(device_id, source)
    state = DevicesState(state.devices, offline, state.battery)
    if not fresh:
        return state, [], timers
    info = ctx.devices.get(device_id)
    detail = {
        "reason": reason,
        "last_heard_at": None if last_heard is None else isoformat_utc(last_heard),
        "heartbeat_s": None if info is None else info.heartbeat_s,
        "device_kind": None if info is None else str(info.kind),
    }
    intent = open_intent(
        ctx,
        AlertKind.DEVICE_OFFLINE,
        now,
        source,
        device_id=device_id,
        detail=detail,
        priority=offline_priority(ctx, device_id),
    )
    return state, [intent], timers


def on_alert_closed(
    ctx: ResidentContext, state: DevicesState, kind: AlertKind, device_id: str | None = None
) -> Step[DevicesState]:
    """Staff resolved the device's alert: that device goes quiet until its condition ends."""
    if kind is AlertKind.DEVICE_OFFLINE:
        return DevicesState(state.devices, state.offline.closed(device_id), state.battery), [], []
    if kind is AlertKind.BATTERY_LOW:
        return DevicesState(state.devices, state.offline, state.battery.closed(device_id)), [], []
    return state, [], []


def supervise(
    ctx: ResidentContext,
    state: DevicesState,
    last_seen: Mapping[str, datetime],
    now: datetime,
    grace: timedelta,
) -> Step[DevicesState]:
    """Arm the heartbeat of every device of the resident at start-up.

    A deadline counts from the device's last-seen time (the later of `last_seen` — from
    storage — and what the state knows), or from `now` for a device never heard, and is
    never earlier than ``now + grace``: after a downtime the broker first delivers what
    it queued meanwhile, and that must not look like silence.
    """
    now = as_utc(now)
    floor = now + grace
    devices: dict[str, DeviceWatch] | None = None
    timers: list[Timer] = []
    for device_id, info in ctx.devices.items():
        watch = state.devices.get(device_id, _UNHEARD)
        heard = watch.last_heard
        seen = last_seen.get(device_id)
        if seen is not None and (heard is None or as_utc(seen) > heard):
            heard = min(as_utc(seen), now)
            if devices is None:
                devices = dict(state.devices)
            devices[device_id] = DeviceWatch(heard, watch.reported_offline, watch.battery_pct)
        if watch.reported_offline or state.offline.holds(device_id):
            continue
        deadline = (heard if heard is not None else now) + info.silence_limit
        timers.append(Timer(heartbeat_key(device_id), deadline if deadline > floor else floor))
    if devices is not None:
        state = DevicesState(MappingProxyType(devices), state.offline, state.battery)
    return state, [], timers


def forget_device(ctx: ResidentContext, state: DevicesState, device_id: str, now: datetime) -> Step[DevicesState]:
    """The device left the registry: stop supervising it, cancel what only it held open."""
    intents: list[AlertIntent] = []
    removed = {"reason": "device removed"}
    offline, ended = state.offline.forget(device_id)
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.DEVICE_OFFLINE, now, ended, device_id=device_id, detail=removed))
    battery, ended = state.battery.forget(device_id)
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.BATTERY_LOW, now, ended, device_id=device_id, detail=removed))
    devices = {k: v for k, v in state.devices.items() if k != device_id}
    state = DevicesState(MappingProxyType(devices), offline, battery)
    return state, intents, [Timer(heartbeat_key(device_id), None)]


def timers_of(ctx: ResidentContext, state: DevicesState) -> list[Timer]:
    """Heartbeat timers implied by a restored state (devices heard before)."""
    timers: list[Timer] = []
    for device_id, watch in state.devices.items():
        info = ctx.devices.get(device_id)
        if info is None or watch.last_heard is None or watch.reported_offline:
            continue
        if state.offline.holds(device_id):
            continue
        timers.append(Timer(heartbeat_key(device_id), watch.last_heard + info.silence_limit))
    return timers
