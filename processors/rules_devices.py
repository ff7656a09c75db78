"""Device health: ``device_offline`` (heartbeat supervision, Last Will) and ``battery_low``.

device_offline (high for an ``alarm_unit``, medium for other kinds)
    Every message from a device — any event, or status ``online`` — is *hearing* it:
    its heartbeat timer is re-armed to (time heard) + 3 × ``heartbeat_s`` (time heard is the
    gateway's ``received_at``, never later than now). If the timer passes, the device is
    offline ("silent"). Hearing it again cancels.
    Source: ``(device_id, "offline@<UTC time last heard>")``, or
    ``(device_id, "offline@never")`` for a device not heard since it was registered — the
    same silence always gives the same source, also after a restart.

status ``offline`` (MQTT Last Will) is debounced
    It raises device_offline only if the device is still offline — no ``online``, no
    event — ``offline_debounce`` later (`DeviceInfo`, default 60 s), or at its silence
    deadline if that comes first. A connection that drops and comes straight back, the
    everyday case of a mobile link or a broker restart, raises nothing. The deadline
    is the device's heartbeat timer, so a debounce costs no timer of its own.

flapping (docs/rules.md)
    A *run* is a series of ``offline`` statuses of one device, each within `FLAP_WINDOW`
    (10 min) of the one before. From the second status of a run the device is flapping:
    hearing it no longer cancels its device_offline alert at once; the first message
    heard `FLAP_WINDOW` after the run's last ``offline`` does. At the `FLAP_LIMIT`-th
    (5th) status of a run, if no device_offline alert of the device is unresolved, one is
    raised at once, one step below the offline priority (medium for an alarm unit, low
    otherwise), reason ``unstable connection``, source
    ``(device_id, "unstable@<UTC time of the run's first offline>")``. If the device then
    really stays offline (debounce or silence) that alert is raised to the offline
    priority by one attached trigger, once. So a device flapping any number of times
    makes one alert for the run (two if its first outage outlasted the debounce and
    ended before the flapping began), never one per flap.

battery_low (low)
    ``battery.low``, or any event whose ``data.battery_pct`` < 15 → OPEN (once per
    episode). Cancelled when an event reports ``battery_pct`` ≥ 30 (hysteresis: readings
    from 15 to 29 change nothing). Source: the event that first reported the low battery.

Each device's condition is its own alert (see `tracking.PerPart`). Staff resolving an
alert silences the device it covered until its condition ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from processors.context import (
    DeviceInfo,
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
from processors.jsonstate import dump_time, flag, obj, opt_int, opt_number, opt_time, req_time
from processors.localtime import as_utc, isoformat_utc
from processors.tracking import NO_PARTS, PerPart
from trygg.contract import (
    ALARM_CRITICAL_KINDS,
    BATTERY_LOW_BELOW,
    BATTERY_OK_FROM,
    AlertKind,
    Event,
    EventType,
    Priority,
)
from trygg.pipeline import AlertIntent, DeviceStatus

#: `offline` statuses each within this of the one before are one run (flapping)
FLAP_WINDOW: Final = timedelta(minutes=10)
#: the status of a run that raises an "unstable connection" alert
FLAP_LIMIT: Final = 5
#: from this status of a run, hearing the device no longer ends its alert at once
FLAPPING_FROM: Final = 2

_UNSTABLE: Final = "unstable@"


class DeviceWatch(NamedTuple):
    """What is known about one device (a tuple: heartbeats create one per message)."""

    last_heard: datetime | None = None
    reported_offline: bool = False  # status "offline" received, not heard since
    battery_pct: float | None = None


class Flaps(NamedTuple):
    """A device's current run of `offline` statuses (kept only for devices that sent one
    within `FLAP_WINDOW`: the map is empty for a quiet fleet)."""

    since: datetime  # the run's first offline status
    last: datetime  # its latest
    statuses: int  # offline statuses in the run
    #: the offline status whose debounce is running (None once heard, or decided)
    pending: datetime | None = None


_UNHEARD: Final = DeviceWatch()
_NO_DEVICES: Mapping[str, DeviceWatch] = MappingProxyType({})
_NO_FLAPS: Mapping[str, Flaps] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DevicesState:
    devices: Mapping[str, DeviceWatch] = field(default_factory=lambda: _NO_DEVICES)
    offline: PerPart = NO_PARTS  # one alert per device
    battery: PerPart = NO_PARTS
    flaps: Mapping[str, Flaps] = field(default_factory=lambda: _NO_FLAPS)

    def watch(self, device_id: str) -> DeviceWatch:
        return self.devices.get(device_id, _UNHEARD)

    def with_watch(self, device_id: str, watch: DeviceWatch) -> DevicesState:
        devices = dict(self.devices)
        devices[device_id] = watch
        return DevicesState(MappingProxyType(devices), self.offline, self.battery, self.flaps)

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
            "flaps": {
                device_id: {"since": dump_time(f.since), "last": dump_time(f.last), "statuses": f.statuses,
                            "pending": dump_time(f.pending)}
                for device_id, f in sorted(self.flaps.items())
            },
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
        flaps: dict[str, Flaps] = {}
        for device_id, raw in obj(fields.get("flaps"), f"{path}.flaps").items():  # absent from older snapshots
            p = f"{path}.flaps.{device_id}"
            f = obj(raw, p)
            flaps[device_id] = Flaps(req_time(f, "since", p), req_time(f, "last", p), opt_int(f, "statuses", p),
                                     opt_time(f, "pending", p))
        return cls(
            devices=MappingProxyType(devices),
            offline=PerPart.from_json(fields.get("offline", {}), f"{path}.offline"),
            battery=PerPart.from_json(fields.get("battery", {}), f"{path}.battery"),
            flaps=MappingProxyType(flaps) if flaps else _NO_FLAPS,
        )


def offline_priority(ctx: ResidentContext, device_id: str) -> Priority:
    return Priority.HIGH if ctx.device_kind(device_id) in ALARM_CRITICAL_KINDS else Priority.MEDIUM


def unstable_priority(ctx: ResidentContext, device_id: str) -> Priority:
    """One step below `offline_priority`: the device is reachable most of the time."""
    return Priority.MEDIUM if ctx.device_kind(device_id) in ALARM_CRITICAL_KINDS else Priority.LOW


def offline_source(device_id: str, last_heard: datetime | None) -> Source:
    marker = "never" if last_heard is None else isoformat_utc(last_heard)
    return (device_id, f"offline@{marker}")


def unstable_source(device_id: str, run: Flaps) -> Source:
    return (device_id, f"{_UNSTABLE}{isoformat_utc(run.since)}")


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
    state and nothing else unless an alert changes or the device is flapping.
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
    offline, battery, flaps = state.offline, state.battery, state.flaps
    if offline.holds(device_id) or (flaps and device_id in flaps):
        offline, flaps, intents = _heard_again(ctx, offline, flaps, device_id, heard, now, event, None)
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
    return DevicesState(MappingProxyType(devices), offline, battery, flaps), intents, timers


def _heard_again(
    ctx: ResidentContext,
    offline: PerPart,
    flaps: Mapping[str, Flaps],
    device_id: str,
    heard: datetime,
    now: datetime,
    event: Event | None,
    detail: dict[str, Any] | None,
) -> tuple[PerPart, Mapping[str, Flaps], list[AlertIntent]]:
    """The device was heard: a pending `offline` is over, and its device_offline alert
    ends — unless it is flapping, then only once its run is over."""
    run = flaps.get(device_id)
    flapping = False
    if run is not None:
        rest = dict(flaps)
        if heard - run.last >= FLAP_WINDOW:
            del rest[device_id]  # the run is over
        else:
            flapping = run.statuses >= FLAPPING_FROM
            rest[device_id] = run._replace(pending=None)
        flaps = MappingProxyType(rest) if rest else _NO_FLAPS
    if flapping:
        return offline, flaps, []
    offline, ended = offline.end(device_id)
    if ended is None:
        return offline, flaps, []
    intent = cancel_intent(ctx, AlertKind.DEVICE_OFFLINE, now, ended, event=event, device_id=device_id,
                           priority=offline_priority(ctx, device_id), detail=detail)
    return offline, flaps, [intent]


def on_status(ctx: ResidentContext, state: DevicesState, status: DeviceStatus, now: datetime) -> Step[DevicesState]:
    device_id = status.device_id
    watch = state.watch(device_id)
    info = ctx.devices.get(device_id)
    if status.online:
        heard = _heard_at(watch, status.received_at, now)
        devices = state.with_watch(device_id, DeviceWatch(heard, False, watch.battery_pct)).devices
        timers = [] if info is None else [Timer(heartbeat_key(device_id), heard + info.silence_limit)]
        offline, flaps, intents = _heard_again(ctx, state.offline, state.flaps, device_id, heard, now, None,
                                               {"reason": "status online"})
        return DevicesState(devices, offline, state.battery, flaps), intents, timers
    if watch.reported_offline:
        return state, [], []  # the same Last Will again (retained, re-delivered): no new flap
    return _offline_status(ctx, state, device_id, min(as_utc(status.received_at), as_utc(now)), now)


def _offline_status(
    ctx: ResidentContext, state: DevicesState, device_id: str, at: datetime, now: datetime
) -> Step[DevicesState]:
    """An `offline` status at `at`: count it in the device's run, raise "unstable
    connection" at the run's `FLAP_LIMIT`-th, and start the debounce if its outcome can
    still change something."""
    watch = state.watch(device_id)
    run = state.flaps.get(device_id)
    new_run = run is None or at - run.last >= FLAP_WINDOW
    run = Flaps(at, at, 1) if run is None or new_run else Flaps(run.since, at, run.statuses + 1)
    offline = state.offline
    intents: list[AlertIntent] = []
    if run.statuses >= FLAP_LIMIT and not offline.holds(device_id):
        source = unstable_source(device_id, run)
        offline, _ = offline.start(device_id, source)
        intents.append(open_intent(
            ctx, AlertKind.DEVICE_OFFLINE, now, source, device_id=device_id,
            detail={**_offline_detail(ctx, device_id, watch.last_heard, "unstable connection"),
                    "offline_statuses": run.statuses, "flapping_since": isoformat_utc(run.since)},
            priority=unstable_priority(ctx, device_id)))
    watching = _may_raise(offline, device_id)
    run = run._replace(pending=at if watching else None)
    flaps = dict(state.flaps)
    flaps[device_id] = run
    watch = DeviceWatch(watch.last_heard, True, watch.battery_pct)
    state = DevicesState(state.with_watch(device_id, watch).devices, offline, state.battery, MappingProxyType(flaps))
    info = ctx.devices.get(device_id)
    if info is None:
        return state, intents, []
    return state, intents, [Timer(heartbeat_key(device_id), _deadline(info, watch, run) if watching else None)]


def _may_raise(offline: PerPart, device_id: str) -> bool:
    """Whether the device going offline would still change its alert: none is
    unresolved (or quiet), or the one open is only "unstable connection"."""
    if not offline.holds(device_id):
        return True
    held = dict(offline.alerted).get(device_id)
    return held is not None and held[1].startswith(_UNSTABLE)


def _deadline(info: DeviceInfo, watch: DeviceWatch, run: Flaps | None) -> datetime | None:
    """When the device counts as offline unless heard: its silence deadline, or the end
    of the debounce of a pending `offline` status if that comes first."""
    silent = None if watch.last_heard is None else watch.last_heard + info.silence_limit
    if not watch.reported_offline or run is None or run.pending is None:
        return silent
    confirmed = run.pending + info.offline_debounce
    return confirmed if silent is None or confirmed < silent else silent


def on_timer(ctx: ResidentContext, state: DevicesState, key: TimerKey, now: datetime) -> Step[DevicesState]:
    device_id = key.owner
    info = ctx.devices.get(device_id)
    watch = state.watch(device_id)
    if info is None:
        return state, [], []
    if watch.reported_offline:
        run = state.flaps.get(device_id)
        if run is None or run.pending is None:
            return state, [], []  # decided already
        deadline = _deadline(info, watch, run)
        if deadline is not None and deadline > now:
            return state, [], [Timer(key, deadline)]
        reason = "status offline" if run.pending + info.offline_debounce <= now else "silent"
        flaps = dict(state.flaps)
        flaps[device_id] = run._replace(pending=None)
        state = DevicesState(state.devices, state.offline, state.battery, MappingProxyType(flaps))
        return _went_offline(ctx, state, device_id, watch.last_heard, now, reason, [])
    if watch.last_heard is not None and watch.last_heard + info.silence_limit > now:
        return state, [], [Timer(key, watch.last_heard + info.silence_limit)]  # heard meanwhile
    return _went_offline(ctx, state, device_id, watch.last_heard, now, "silent", [])


def _offline_detail(ctx: ResidentContext, device_id: str, last_heard: datetime | None, reason: str) -> dict[str, Any]:
    info = ctx.devices.get(device_id)
    return {
        "reason": reason,
        "last_heard_at": None if last_heard is None else isoformat_utc(last_heard),
        "heartbeat_s": None if info is None else info.heartbeat_s,
        "device_kind": None if info is None else str(info.kind),
    }


def _went_offline(
    ctx: ResidentContext,
    state: DevicesState,
    device_id: str,
    last_heard: datetime | None,
    now: datetime,
    reason: str,
    timers: list[Timer],
) -> Step[DevicesState]:
    """The device is offline. A new alert, or — when only "unstable connection" is open
    for it — one trigger attached to that alert at the offline priority (the alerts stage
    raises its priority), after which its source is the offline one (so this happens once)."""
    source = offline_source(device_id, last_heard)
    upgrade = _may_raise(state.offline, device_id) and state.offline.holds(device_id)
    offline = state.offline.end(device_id)[0] if upgrade else state.offline
    offline, fresh = offline.start(device_id, source)
    state = DevicesState(state.devices, offline, state.battery, state.flaps)
    if not fresh:
        return state, [], timers
    detail = _offline_detail(ctx, device_id, last_heard, reason)
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
        return DevicesState(state.devices, state.offline.closed(device_id), state.battery, state.flaps), [], []
    if kind is AlertKind.BATTERY_LOW:
        return DevicesState(state.devices, state.offline, state.battery.closed(device_id), state.flaps), [], []
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
    it queued meanwhile, and that must not look like silence. A pending `offline`
    status keeps its debounce (within the same floor).
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
            watch = devices[device_id] = DeviceWatch(heard, watch.reported_offline, watch.battery_pct)
        deadline = _armed(info, watch, state, device_id)
        if deadline is None and not watch.reported_offline and not state.offline.holds(device_id):
            deadline = now + info.silence_limit  # never heard
        if deadline is not None:
            timers.append(Timer(heartbeat_key(device_id), deadline if deadline > floor else floor))
    if devices is not None:
        state = DevicesState(MappingProxyType(devices), state.offline, state.battery, state.flaps)
    return state, [], timers


def _armed(info: DeviceInfo, watch: DeviceWatch, state: DevicesState, device_id: str) -> datetime | None:
    """The heartbeat deadline a device's state implies, None when nothing is to be
    decided for it (offline and alerted or quiet already, or never heard)."""
    if not _may_raise(state.offline, device_id):
        return None
    if watch.reported_offline:
        run = state.flaps.get(device_id)
        return None if run is None or run.pending is None else _deadline(info, watch, run)
    return _deadline(info, watch, None)


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
    flaps = {k: v for k, v in state.flaps.items() if k != device_id}
    state = DevicesState(MappingProxyType(devices), offline, battery, MappingProxyType(flaps) if flaps else _NO_FLAPS)
    return state, intents, [Timer(heartbeat_key(device_id), None)]


def timers_of(ctx: ResidentContext, state: DevicesState) -> list[Timer]:
    """Heartbeat timers implied by a restored state (devices heard before, and pending
    `offline` statuses)."""
    timers: list[Timer] = []
    for device_id, watch in state.devices.items():
        info = ctx.devices.get(device_id)
        if info is None:
            continue
        deadline = _armed(info, watch, state, device_id)
        if deadline is not None:
            timers.append(Timer(heartbeat_key(device_id), deadline))
    return timers
