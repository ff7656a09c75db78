"""The state machine of one resident: every rule family, composed.

`ResidentState` holds one immutable sub-state per rule family; the functions here route
an input to the families that care and concatenate their intents and timers, in a fixed
order (alarms first). Like the rules, they are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from processors import rules_activity, rules_alarm, rules_devices, rules_doors, rules_geofence
from processors.context import (
    DOOR,
    HEARTBEAT,
    INACTIVITY,
    WANDER,
    ResidentContext,
    Step,
    Timer,
    TimerKey,
    cancel_intent,
    heartbeat_key,
)
from processors.jsonstate import obj
from processors.rules_activity import ActivityState
from processors.rules_devices import DevicesState
from processors.rules_doors import DoorsState
from processors.rules_geofence import GeoState
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent, DeviceStatus

_DOORS: Final = DoorsState()
_ACTIVITY: Final = ActivityState()
_GEO: Final = GeoState()
_DEVICES: Final = DevicesState()


@dataclass(frozen=True, slots=True)
class ResidentState:
    doors: DoorsState = _DOORS
    activity: ActivityState = _ACTIVITY
    geo: GeoState = _GEO
    devices: DevicesState = _DEVICES

    def is_empty(self) -> bool:
        return self == EMPTY

    def to_json(self) -> dict[str, Any]:
        return {
            "doors": self.doors.to_json(),
            "activity": self.activity.to_json(),
            "geo": self.geo.to_json(),
            "devices": self.devices.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> ResidentState:
        fields = obj(doc, path)
        return cls(
            doors=DoorsState.from_json(fields.get("doors"), f"{path}.doors"),
            activity=ActivityState.from_json(fields.get("activity"), f"{path}.activity"),
            geo=GeoState.from_json(fields.get("geo"), f"{path}.geo"),
            devices=DevicesState.from_json(fields.get("devices"), f"{path}.devices"),
        )


EMPTY = ResidentState()


def on_event(ctx: ResidentContext, state: ResidentState, event: Event, now: datetime) -> Step[ResidentState]:
    kind = event.type
    intents = rules_alarm.on_event(ctx, event, now) if kind in rules_alarm.EVENT_TYPES else []
    devices, more, timers = rules_devices.on_event(ctx, state.devices, event, now)
    intents += more
    doors, geo, activity = state.doors, state.geo, state.activity
    if kind in rules_doors.EVENT_TYPES:
        doors, more, later = rules_doors.on_event(ctx, doors, event, now)
        intents += more
        timers += later
    if kind is EventType.LOCATION:
        geo, more, later = rules_geofence.on_event(ctx, geo, event, now)
        intents += more
        timers += later
    if kind in rules_activity.ACTIVITY:
        activity, more, later = rules_activity.on_event(ctx, activity, event, now)
        intents += more
        timers += later
    return ResidentState(doors, activity, geo, devices), intents, timers


def on_status(ctx: ResidentContext, state: ResidentState, status: DeviceStatus, now: datetime) -> Step[ResidentState]:
    devices, intents, timers = rules_devices.on_status(ctx, state.devices, status, now)
    return ResidentState(state.doors, state.activity, state.geo, devices), intents, timers


def on_timer(ctx: ResidentContext, state: ResidentState, key: TimerKey, now: datetime) -> Step[ResidentState]:
    if key.rule == HEARTBEAT:
        devices, intents, timers = rules_devices.on_timer(ctx, state.devices, key, now)
        return ResidentState(state.doors, state.activity, state.geo, devices), intents, timers
    if key.rule in (DOOR, WANDER):
        doors, intents, timers = rules_doors.on_timer(ctx, state.doors, key, now)
        return ResidentState(doors, state.activity, state.geo, state.devices), intents, timers
    if key.rule == INACTIVITY:
        activity, intents, timers = rules_activity.on_timer(ctx, state.activity, now)
        return ResidentState(state.doors, activity, state.geo, state.devices), intents, timers
    return state, [], []


def on_alert_closed(
    ctx: ResidentContext, state: ResidentState, kind: AlertKind, device_id: str | None = None
) -> Step[ResidentState]:
    """Staff resolved the resident's alert of `kind` (see `tracking.Tracked.closed`)."""
    if kind in (AlertKind.DOOR_OPEN, AlertKind.WANDERING):
        doors, intents, timers = rules_doors.on_alert_closed(ctx, state.doors, kind)
        return ResidentState(doors, state.activity, state.geo, state.devices), intents, timers
    if kind is AlertKind.GEOFENCE_EXIT:
        geo, intents, timers = rules_geofence.on_alert_closed(ctx, state.geo)
        return ResidentState(state.doors, state.activity, geo, state.devices), intents, timers
    if kind is AlertKind.INACTIVITY:
        activity, intents, timers = rules_activity.on_alert_closed(ctx, state.activity)
        return ResidentState(state.doors, activity, state.geo, state.devices), intents, timers
    if kind in (AlertKind.DEVICE_OFFLINE, AlertKind.BATTERY_LOW):
        devices, intents, timers = rules_devices.on_alert_closed(ctx, state.devices, kind, device_id)
        return ResidentState(state.doors, state.activity, state.geo, devices), intents, timers
    return state, [], []  # smoke, alarm, fall keep no state


def start(
    ctx: ResidentContext,
    state: ResidentState,
    now: datetime,
    last_seen: Mapping[str, datetime],
    grace: timedelta,
) -> Step[ResidentState]:
    """Supervision starts: heartbeats from last-seen times, the inactivity clock."""
    devices, i1, t1 = rules_devices.supervise(ctx, state.devices, last_seen, now, grace)
    activity, i2, t2 = rules_activity.start(ctx, state.activity, now)
    if devices is state.devices and activity is state.activity:
        return state, i1 + i2, t1 + t2
    return ResidentState(state.doors, activity, state.geo, devices), i1 + i2, t1 + t2


def timers_of(ctx: ResidentContext, state: ResidentState) -> list[Timer]:
    """Every timer a (restored) state implies."""
    return (
        rules_doors.timers_of(ctx, state.doors)
        + rules_activity.timers_of(ctx, state.activity)
        + rules_devices.timers_of(ctx, state.devices)
    )


def timer_keys(ctx: ResidentContext, state: ResidentState) -> list[TimerKey]:
    """Every timer key the resident may have armed (to disarm a removed resident)."""
    return (
        rules_doors.timer_keys(ctx, state.doors)
        + [rules_activity.timer_key(ctx)]
        + [heartbeat_key(d) for d in ctx.devices]
    )


def reconfigure(old: ResidentContext, new: ResidentContext, state: ResidentState, now: datetime) -> Step[ResidentState]:
    """The resident's registry entry changed: drop what no longer applies, re-arm the rest.

    Removed devices stop being supervised (an alert only they held is cancelled); removing
    every safe zone cancels an open geofence alert; a resident without motion or door
    sensors any more is no longer watched for inactivity (an open alert is cancelled).
    Deadlines are recomputed from the state with the new settings; new devices and a newly
    watched resident start supervision at `now`.
    """
    intents: list[AlertIntent] = []
    timers: list[Timer] = []
    devices = state.devices
    for device_id in old.devices:
        if device_id not in new.devices:
            devices, i, t = rules_devices.forget_device(new, devices, device_id, now)
            intents += i
            timers += t
    geo = state.geo
    if old.zones is not None and new.zones is None:
        geo, i, t = rules_geofence.on_zones_removed(new, geo, now)
        intents += i
        timers += t
    activity = state.activity
    if old.watches_inactivity and not new.watches_inactivity:
        _, ended = activity.tracked.end()
        if ended is not None:
            detail = {"reason": "no motion or door sensor"}
            intents.append(cancel_intent(new, AlertKind.INACTIVITY, now, ended, detail=detail))
        activity = ActivityState()
        timers.append(Timer(rules_activity.timer_key(new), None))
    state = ResidentState(doors=state.doors, activity=activity, geo=geo, devices=devices)
    timers += timers_of(new, state)
    added = [d for d in new.devices if d not in old.devices and d not in devices.devices]
    for device_id in added:
        info = new.devices[device_id]
        timers.append(Timer(heartbeat_key(device_id), now + info.silence_limit))
    if new.watches_inactivity and not old.watches_inactivity:
        activity, _, t = rules_activity.start(new, state.activity, now)
        state = ResidentState(state.doors, activity, state.geo, state.devices)
        timers += t
    return state, intents, timers
