"""What devices do on their own: heartbeats, batteries, going silent, imperfect networks.

`DeviceDay` turns a resident's `DayPlan` into the day's `SimMessage`s:

- every device sends `heartbeat` each `heartbeat_s` (battery devices with `battery_pct`);
- batteries drain; crossing 15 % sends `battery.low` once; home care changes the battery at
  a later visit; trackers and phones go on the charger at bedtime, unless forgotten;
- now and then a device goes silent for 10–90 minutes: no heartbeats, its events arrive
  late when it is back, and, when the connection really dropped, `offline` / `online`
  status messages frame the gap;
- the network duplicates a few messages (same id re-sent) and delays a few (ts minutes in
  the past).

Event ids count up per device in the order the events happened, prefixed with the run tag.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final
from zoneinfo import ZoneInfo

from simulators.profiles import RECHARGEABLE, SimDevice, SimResident
from simulators.rhythm import MINUTE, DayPlan, hash_offset
from simulators.wire import SimMessage, TsFormatter, encode_event, status_message
from trygg.contract import DeviceKind, EventType

LOW_PCT: Final = 15.0
RECOVERED_PCT: Final = 30.0
_SILENT_P: Final[dict[DeviceKind, float]] = {
    DeviceKind.GPS_TRACKER: 0.04,
    DeviceKind.PHONE: 0.03,
    DeviceKind.MOTION_SENSOR: 0.008,
    DeviceKind.DOOR_SENSOR: 0.008,
}
_SILENT_DEFAULT_P: Final = 0.01
_AT: Final = attrgetter("at_ms")


@dataclass(frozen=True, slots=True)
class Network:
    """Probabilities of the network's imperfections, per event message."""

    duplicate_p: float = 0.004
    late_p: float = 0.003
    silence_scale: float = 1.0  # multiplies the per-kind chance of a silent spell


@dataclass(slots=True)
class DeviceState:
    """What a device carries from one day to the next."""

    battery: float | None
    low_sent: bool = False
    replace_from_ms: int | None = None
    counter: int = 0


def initial_state(device: SimDevice, rng: random.Random) -> DeviceState:
    if device.drain_per_day is None:
        return DeviceState(None)
    if device.kind in RECHARGEABLE:
        return DeviceState(rng.uniform(60, 100))
    if rng.random() < 0.04:  # nearly empty: battery.low within the first day
        return DeviceState(LOW_PCT + rng.uniform(0.05, 1.0) * device.drain_per_day)
    return DeviceState(rng.uniform(40, 100))


@dataclass(slots=True)
class _Track:
    """A battery's level over one day, piecewise linear."""

    points: list[tuple[int, float]] = field(default_factory=list)

    def add(self, ts: int, level: float) -> None:
        self.points.append((ts, max(0.0, min(100.0, level))))

    def at(self, ts: int) -> float:
        pts = self.points
        for (t0, l0), (t1, l1) in itertools.pairwise(pts):
            if t0 <= ts <= t1:
                return l0 if t1 == t0 else l0 + (l1 - l0) * (ts - t0) / (t1 - t0)
        return pts[-1][1] if ts >= pts[-1][0] else pts[0][1]

    def crossing(self, below: float) -> int | None:
        pts = self.points
        for (t0, l0), (t1, l1) in itertools.pairwise(pts):
            if l0 >= below > l1:
                return t0 + int((t1 - t0) * (l0 - below) / (l0 - l1))
        return None


def _battery_track(dev: SimDevice, state: DeviceState, plan: DayPlan) -> _Track:
    assert state.battery is not None and dev.drain_per_day is not None
    track, level = _Track(), state.battery
    track.add(plan.start_ms, level)
    if dev.kind in RECHARGEABLE:  # worn from waking until bedtime
        track.add(plan.wake_ms, level)
        level -= dev.drain_per_day
        track.add(plan.bed_ms, level)
        if plan.charged:
            track.add(plan.bed_ms + 120 * MINUTE, 100.0)
        else:
            track.add(plan.end_ms, level - dev.drain_per_day / 6)
    else:
        per_ms = dev.drain_per_day / (plan.end_ms - plan.start_ms)
        swap = state.replace_from_ms
        if swap is not None and swap < plan.end_ms:
            when = max(swap, min((v for v in plan.visits if v >= swap), default=swap))
            when = max(min(when, plan.end_ms - 1), plan.start_ms)
            track.add(when, level - per_ms * (when - plan.start_ms))
            track.add(when + 1, 100.0)
            track.add(plan.end_ms, 100.0 - per_ms * (plan.end_ms - when))
            state.replace_from_ms = None
        else:
            track.add(plan.end_ms, level - dev.drain_per_day)
    track.points.sort()
    return track


@dataclass(slots=True)
class _Raw:
    ts: int
    at: int
    device: SimDevice
    type: EventType
    data: dict[str, Any]


def _heartbeats(
    dev: SimDevice,
    plan: DayPlan,
    track: _Track | None,
    gap: tuple[int, int] | None,
    tag: str,
    fmt: TsFormatter,
    since_ms: int,
    duplicate_p: float,
    rng: random.Random,
) -> Iterator[SimMessage]:
    """A device's heartbeats of the day, made lazily (they are most of the traffic).

    Ids are `{tag}-h{slot}` with the heartbeat's slot number since the epoch, so they need
    no counter; a duplicate follows its original within half a period, keeping the order.
    """
    step = dev.heartbeat_s * 1000
    ts = plan.start_ms - plan.start_ms % step + hash_offset(dev.id) % step
    if ts < plan.start_ms:
        ts += step
    kind = EventType.HEARTBEAT
    while ts < plan.end_ms:
        resent = rng.random() < duplicate_p
        delay = int(rng.uniform(0.5, min(30.0, dev.heartbeat_s / 2)) * 1000)
        if ts >= since_ms and not (gap and gap[0] <= ts < gap[1]):
            data = {} if track is None else {"battery_pct": round(track.at(ts))}
            payload = encode_event(f"{tag}-h{ts // step}", fmt(ts), kind, data)
            yield SimMessage(ts, dev.id, "events", payload, kind.value, ts)
            if resent:
                yield SimMessage(ts + delay, dev.id, "events", payload, kind.value, ts,
                                 duplicate=True)
        ts += step


def device_day(
    res: SimResident,
    plan: DayPlan,
    states: dict[str, DeviceState],
    rng: random.Random,
    tag: str,
    network: Network,
    since_ms: int = 0,
) -> Iterator[SimMessage]:
    """Every message the resident's devices send on the planned day, in publication order.

    Events before `since_ms` are counted (ids stay the same) but not sent. Batteries and
    silences are decided at once; heartbeats are made as the iterator is consumed.
    """
    fmt = TsFormatter(ZoneInfo(res.timezone))
    raws: list[_Raw] = [_Raw(h.ts_ms, h.ts_ms, h.device, h.type, h.data) for h in plan.happenings]
    out: list[SimMessage] = []
    beats: list[Iterator[SimMessage]] = []
    silent: dict[str, tuple[int, int]] = {}
    for dev in res.devices:
        p = _SILENT_P.get(dev.kind, _SILENT_DEFAULT_P) * network.silence_scale
        if rng.random() < p:
            start = plan.start_ms + int(rng.random() * (plan.end_ms - plan.start_ms - 90 * MINUTE))
            silent[dev.id] = (start, start + int(rng.uniform(10, 90) * MINUTE))
            if rng.random() < 0.6 and start >= since_ms:  # connection lost: Will, then online
                out.append(status_message(start, dev.id, False))
                out.append(status_message(silent[dev.id][1], dev.id, True))
        state = states[dev.id]
        track = _battery_track(dev, state, plan) if state.battery is not None else None
        if track is not None:
            crossing = track.crossing(LOW_PCT)
            if crossing is not None and not state.low_sent:
                state.low_sent = True
                raws.append(_Raw(crossing, crossing, dev, EventType.BATTERY_LOW,
                                 {"battery_pct": round(track.at(crossing), 1)}))
                if dev.kind not in RECHARGEABLE:  # home care brings a battery tomorrow
                    state.replace_from_ms = plan.end_ms + 9 * 3_600_000
            state.battery = track.at(plan.end_ms)
            if state.battery >= RECOVERED_PCT:
                state.low_sent = False
        beats.append(_heartbeats(dev, plan, track, silent.get(dev.id), tag, fmt, since_ms,
                                 network.duplicate_p, random.Random(rng.getrandbits(64))))
    for raw in raws:  # events of a silent device wait until it is back
        gap = silent.get(raw.device.id)
        if gap and gap[0] <= raw.ts < gap[1]:
            raw.at = gap[1] + (raw.ts - gap[0]) // 1000
    raws.sort(key=lambda r: (r.ts, r.device.id))
    for raw in raws:
        state = states[raw.device.id]
        state.counter += 1
        at = raw.at
        if rng.random() < network.late_p:
            at += int(rng.uniform(1, 15) * MINUTE)
        dup_at = at + int(rng.uniform(0.5, 30) * 1000) if rng.random() < network.duplicate_p else 0
        if raw.ts < since_ms:
            continue
        payload = encode_event(f"{tag}-{state.counter}", fmt(raw.ts), raw.type, raw.data)
        out.append(SimMessage(at, raw.device.id, "events", payload, raw.type.value, raw.ts))
        if dup_at:
            out.append(SimMessage(dup_at, raw.device.id, "events", payload, raw.type.value,
                                  raw.ts, duplicate=True))
    out.sort(key=_AT)
    return heapq.merge(out, *beats, key=_AT)


__all__ = ["LOW_PCT", "DeviceState", "Network", "device_day", "initial_state"]
