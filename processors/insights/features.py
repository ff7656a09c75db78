"""The daily features of many resident-days at once (docs/insights.md "The daily features").

`daily_features(events, frames, params)` works on whole columns: every step is a numpy
operation over all rows of all frames (a sort-free pass, since `Events` arrive sorted by
frame and time), so a day of 100,000 residents costs seconds, not a Python loop per event.

What each feature is, for frame i (the local day D and the night that ended on D's morning):

- ``active_hours``: quarter hours of D with activity at home (motion, a door, a button), or
  spent out of home (a trip out is activity), divided by 4.
- ``first_activity``: local clock time of the first activity after the night window ended;
  ``last_activity``: of the last one before the next night window starts.
- ``night_activity``: minutes of the night window (in 5-minute slots) with activity.
- ``night_toilet_visits``: visits to the bathroom during the night window: motion in a room
  that is the bathroom, after motion elsewhere or after 10 minutes without any there.
- ``room_transitions``: motion in a room other than the one of the motion before, during D.
- ``door_exits``, ``time_out``: a trip out is an exit door's event followed by at least
  10 minutes without motion at home, ended by an exit door's event (coming back); one
  still out at the end of D counts until midnight. ``time_out`` sums the trips' hours
  within D, ``door_exits`` counts those that began in D.
- ``walk_km``: distance between consecutive usable position fixes (accuracy ≤ 50 m, at
  most 15 minutes apart, at walking speed 0.3–2.5 m/s) during D, only on days the
  positions may be used (a valid location basis).
- ``button_presses``: `alarm.button` presses during D.

Data quality: the hours of D in which one of the resident's motion or door sensors was not
heard (no event, no heartbeat) are counted in ``hours_unheard``. A day with more than
`Params.max_unheard_hours` of them is not usable: a dead sensor's silence is never read as
inactivity. A day without any motion at home (with sensors heard), or with ``time_out`` of
at least `Params.away_hours`, or that the registry marks as away, counts as away and is
not usable either. A feature the resident's sensors cannot see (no bathroom sensor, no
exit door sensor, no tracker) is NaN; `Frames.capabilities` says which can (inferred from
the rows when not given).
"""

from __future__ import annotations

import numpy as np

from trygg.insights import (
    CAP_BATHROOM,
    CAP_EXIT_DOOR,
    CAP_GPS,
    CAP_ROOMS,
    FEATURE_INDEX,
    FEATURES,
    ROOM_BATHROOM,
    ROOM_UNKNOWN,
    Daily,
    Events,
    Frames,
    Kind,
    Params,
)

HOUR_S = 3600.0
ACTIVE_SLOT_S = 900.0  # a quarter hour
NIGHT_SLOT_S = 300.0
VISIT_GAP_S = 600.0  # bathroom motion this long after the last there is a new visit
OUT_MIN_S = 600.0  # no motion at home this long after an exit door's event: a trip out
RETURN_WITHIN_S = 300.0  # motion this soon after an exit door's event: someone came in
SUSTAIN_SLOTS = 6  # getting up and settling: a half hour of 5-minute slots ...
SUSTAINED = 3  # ... with activity in at least this many of them
DAY_SLOTS = 25 * 12  # 5-minute slots of the longest day
FIRST_FALLBACK_S = 5 * HOUR_S  # without a night window, the day's first activity counts from 05:00
WALK_ACCURACY_M = 50.0
WALK_MAX_GAP_S = 900.0
WALK_SPEED = (0.3, 2.5)  # m/s
EARTH_M = 6_371_000.0

_AT_HOME = np.array([Kind.MOTION, Kind.DOOR_OPENED, Kind.DOOR_CLOSED, Kind.BUTTON], np.int8)
_SENSOR = np.array([Kind.MOTION, Kind.DOOR_OPENED, Kind.DOOR_CLOSED, Kind.HEARD], np.int8)
_DOOR = np.array([Kind.DOOR_OPENED, Kind.DOOR_CLOSED], np.int8)


def _count(rows: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(rows, minlength=n)[:n].astype(np.float64)


def _distinct_slots(rows: np.ndarray, slots: np.ndarray, n: int, width: int) -> np.ndarray:
    """How many distinct slots each frame has among (rows, slots), slots in [0, width)."""
    keys = np.unique(rows.astype(np.int64) * width + np.clip(slots, 0, width - 1))
    return _count(keys // width, n)


def seen_capabilities(events: Events, n: int) -> np.ndarray:
    """What the rows of each of `n` frames show its sensors can see (CAP_* bits): a room
    named in the events, a bathroom, an exit door, a position."""
    motion = events.kind == Kind.MOTION

    def rows_with(mask: np.ndarray, bit: int) -> np.ndarray:
        return np.where(_count(events.row[mask], n) > 0, bit, 0)

    found: np.ndarray = (rows_with(motion & (events.room != ROOM_UNKNOWN), CAP_ROOMS)
                         | rows_with(motion & (events.room == ROOM_BATHROOM), CAP_BATHROOM)
                         | rows_with(np.isin(events.kind, _DOOR) & events.exit, CAP_EXIT_DOOR)
                         | rows_with(events.kind == Kind.LOCATION, CAP_GPS))
    return found.astype(np.int64)


def _capabilities(events: Events, frames: Frames) -> np.ndarray:
    if frames.capabilities is not None:
        return frames.capabilities.astype(np.int64)
    return seen_capabilities(events, len(frames))


def _hours_unheard(events: Events, frames: Frames, day: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """Hours of each frame's day in which fewer activity sensors were heard than it has."""
    n = len(frames)
    pick = day & np.isin(events.kind, _SENSOR)
    hour = ((events.t[pick] - ds[pick]) // HOUR_S).astype(np.int64).clip(0, 31)
    device = events.device[pick].astype(np.int64) & 0xFFFFFFFF
    keys = np.unique(((events.row[pick].astype(np.int64) * 32 + hour) << 32) | device)
    heard = np.bincount(keys >> 32, minlength=n * 32)[: n * 32].reshape(n, 32)
    hours = np.rint((frames.day_end - frames.day_start) / HOUR_S).astype(np.int64)
    expected = frames.activity_sensors.astype(np.int64)
    short = (heard < expected[:, None]) & (np.arange(32)[None, :] < hours[:, None])
    unheard: np.ndarray = short.sum(axis=1).astype(np.int16)
    return unheard


def _trips(events: Events, frames: Frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trips out as (row, start, end), clipped to nothing; see the module's text."""
    kind = events.kind
    pick = (kind == Kind.MOTION) | (np.isin(kind, _DOOR) & events.exit)
    row, t, door = events.row[pick], events.t[pick], kind[pick] != Kind.MOTION
    if len(t) == 0:
        empty = np.zeros(0)
        return empty.astype(np.int32), empty, empty
    same = row[1:] == row[:-1]
    gap = t[1:] - t[:-1]
    # out between two exit-door events with no motion between them for OUT_MIN_S
    between = same & door[:-1] & door[1:] & (gap >= OUT_MIN_S)
    starts, ends, rows = [t[:-1][between]], [t[1:][between]], [row[:-1][between]]
    # the last signal of a frame is an exit door: out until the end of the day
    last = np.ones(len(t), bool)
    last[:-1] = ~same
    tail = last & door
    day_end = frames.day_end[row[tail]]
    keep = day_end - t[tail] >= OUT_MIN_S
    starts.append(t[tail][keep])
    ends.append(day_end[keep])
    rows.append(row[tail][keep])
    # the first signal of a frame is an exit door followed by motion soon: came back
    first = np.ones(len(t), bool)
    first[1:] = ~same
    nxt_motion = np.zeros(len(t), bool)
    nxt_motion[:-1] = same & ~door[1:] & (gap <= RETURN_WITHIN_S)
    head = first & door & nxt_motion
    lower = np.minimum(frames.night_start, frames.day_start)[row[head]]
    keep = t[head] - lower >= OUT_MIN_S
    starts.append(lower[keep])
    ends.append(t[head][keep])
    rows.append(row[head][keep])
    return np.concatenate(rows), np.concatenate(starts), np.concatenate(ends)


def _slot_ranges(rows: np.ndarray, a: np.ndarray, b: np.ndarray, ds: np.ndarray,
                 slot_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, slot) that the intervals [a, b) touch, slots counted from ds."""
    first = ((a - ds) // slot_s).astype(np.int64)
    last = ((np.maximum(b - 1e-6, a) - ds) // slot_s).astype(np.int64)
    lengths = np.maximum(last - first + 1, 0)
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(rows, lengths), np.repeat(first, lengths) + offsets


def _haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    metres: np.ndarray = 2 * EARTH_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return metres


def _first_last(rows: np.ndarray, t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first and last `t` of each frame among rows sorted by (row, t); NaN without."""
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    if len(t):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:], len(t)] - 1
        first[rows[starts]] = t[starts]
        last[rows[ends]] = t[ends]
    return first, last


def _up_and_settled(rows: np.ndarray, since_midnight: np.ndarray, frames: Frames, lower: np.ndarray,
                    upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """When each frame's person got up (the first event of the first 5-minute slot after
    `lower` that begins `SUSTAINED` active slots of the next half hour) and settled (the
    last event of the last slot that ends such a half hour before `upper`), as instants;
    NaN without one. A toilet visit at 05:40 is
    not getting up, and neither is one at 23:10 staying up."""
    n = len(frames)
    width = SUSTAIN_SLOTS
    slots = (since_midnight // NIGHT_SLOT_S).astype(np.int64).clip(0, DAY_SLOTS - 1)
    active = np.zeros((n, DAY_SLOTS + 2 * width), np.int32)
    active[rows, slots + width] = 1
    csum = np.cumsum(active, axis=1)
    ahead = csum[:, 2 * width - 1:] - csum[:, width - 1:-width]  # active slots in [s, s + width)
    behind = csum[:, width:-width + 1 or None] - csum[:, :-2 * width + 1]  # in (s - width, s]
    busy = active[:, width:-width]
    index = np.arange(DAY_SLOTS)[None, :]
    lo = np.ceil((lower - frames.day_start) / NIGHT_SLOT_S)[:, None]
    hi = ((upper - frames.day_start) / NIGHT_SLOT_S)[:, None]
    rising = (busy > 0) & (ahead[:, :DAY_SLOTS] >= SUSTAINED) & (index >= lo) & (index < hi)
    falling = (busy > 0) & (behind[:, :DAY_SLOTS] >= SUSTAINED) & (index >= lo) & (index < hi)
    first = np.where(rising.any(axis=1), rising.argmax(axis=1), -1)
    last = np.where(falling.any(axis=1), DAY_SLOTS - 1 - falling[:, ::-1].argmax(axis=1), -1)
    # the exact times: the first event of the first slot, the last of the last
    up = np.full(n, np.inf)
    settled = np.full(n, -np.inf)
    at_first, at_last = slots == first[rows], slots == last[rows]
    np.minimum.at(up, rows[at_first], since_midnight[at_first])
    np.maximum.at(settled, rows[at_last], since_midnight[at_last])
    up = np.where(np.isfinite(up), frames.day_start + up, np.nan)
    settled = np.where(np.isfinite(settled), frames.day_start + settled, np.nan)
    return up, settled


def daily_features(events: Events, frames: Frames, params: Params) -> Daily:
    """The features, quality and away flags of every frame (see the module's text)."""
    n = len(frames)
    values = np.full((n, len(FEATURES)), np.nan)
    row, t, kind = events.row, events.t, events.kind
    ds, de = frames.day_start[row], frames.day_end[row]
    ns, ne = frames.night_start[row], frames.night_end[row]
    day = (t >= ds) & (t < de)
    night = (t >= ns) & (t < ne)
    at_home = np.isin(kind, _AT_HOME)
    motion = kind == Kind.MOTION
    caps = _capabilities(events, frames)
    sensed = frames.activity_sensors > 0
    has_night = frames.night_end > frames.night_start
    col = FEATURE_INDEX

    # trips out: time out, exits, and the quarter hours out that count as active
    trip_row, trip_a, trip_b = _trips(events, frames)
    fds, fde = frames.day_start[trip_row], frames.day_end[trip_row]
    a, b = np.maximum(trip_a, fds), np.minimum(trip_b, fde)
    inside = b > a
    time_out = np.bincount(trip_row[inside], weights=(b - a)[inside], minlength=n)[:n] / HOUR_S
    began = (trip_a >= fds) & (trip_a < fde)
    exits = _count(trip_row[began], n)
    out_rows, out_slots = _slot_ranges(trip_row[inside], a[inside], b[inside], fds[inside], ACTIVE_SLOT_S)

    # the waking day: after the night window that ended on D's morning, before the next one
    lower = np.where(has_night & (frames.night_end > frames.day_start), frames.night_end,
                     frames.day_start + FIRST_FALLBACK_S)
    next_night = np.where(has_night, np.minimum(frames.night_start + (frames.day_end - frames.day_start),
                                                frames.day_end), frames.day_end)
    home = day & at_home
    waking = home & (t >= lower[row]) & (t < next_night[row])
    home_slots = ((t[waking] - ds[waking]) // ACTIVE_SLOT_S).astype(np.int64)
    active = _distinct_slots(np.r_[row[waking], out_rows], np.r_[home_slots, out_slots], n, 128)
    values[:, col["active_hours"]] = active / 4

    # getting up after the night and settling for the next one, as local clock hours
    up, settled = _up_and_settled(row[home], t[home] - ds[home], frames, lower, next_night)
    values[:, col["first_activity"]] = 24 - (frames.day_end - up) / HOUR_S
    values[:, col["last_activity"]] = 24 - (frames.day_end - settled) / HOUR_S

    awake_at_night = night & at_home
    night_slots = ((t[awake_at_night] - ns[awake_at_night]) // NIGHT_SLOT_S).astype(np.int64)
    values[:, col["night_activity"]] = np.where(
        has_night, _distinct_slots(row[awake_at_night], night_slots, n, 512) * NIGHT_SLOT_S / 60, np.nan)

    nm = night & motion
    nrow, nt, bath = row[nm], t[nm], events.room[nm] == ROOM_BATHROOM
    prev_same = np.r_[False, nrow[1:] == nrow[:-1]]
    prev_bath = np.r_[False, bath[:-1]]
    prev_t = np.r_[-np.inf, nt[:-1]]
    visit = bath & ~(prev_same & prev_bath & (nt - prev_t < VISIT_GAP_S))
    values[:, col["night_toilet_visits"]] = np.where(has_night & ((caps & CAP_BATHROOM) > 0),
                                                     _count(nrow[visit], n), np.nan)

    dm = day & motion & (events.room != ROOM_UNKNOWN)
    drow, droom = row[dm], events.room[dm]
    moved = (drow[1:] == drow[:-1]) & (droom[1:] != droom[:-1])
    values[:, col["room_transitions"]] = np.where((caps & CAP_ROOMS) > 0, _count(drow[1:][moved], n), np.nan)

    door_known = (caps & CAP_EXIT_DOOR) > 0
    values[:, col["door_exits"]] = np.where(door_known, exits, np.nan)
    values[:, col["time_out"]] = np.where(door_known, time_out, np.nan)

    fix = day & (kind == Kind.LOCATION) & (events.accuracy_m <= WALK_ACCURACY_M) & ~np.isnan(events.lat)
    frow, ft, lat, lon = row[fix], t[fix], events.lat[fix], events.lon[fix]
    dt = ft[1:] - ft[:-1]
    dist = _haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = dist / dt
    step = (frow[1:] == frow[:-1]) & (dt > 0) & (dt <= WALK_MAX_GAP_S) & (speed >= WALK_SPEED[0]) & (
        speed <= WALK_SPEED[1])
    walked = np.bincount(frow[1:][step], weights=dist[step], minlength=n)[:n] / 1000
    values[:, col["walk_km"]] = np.where(frames.located & ((caps & CAP_GPS) > 0), walked, np.nan)

    values[:, col["button_presses"]] = _count(row[day & (kind == Kind.BUTTON)], n)

    # what the activity sensors alone can tell is unknown without them
    blind = ~sensed
    for name in ("active_hours", "first_activity", "last_activity", "night_activity", "night_toilet_visits",
                 "room_transitions", "door_exits", "time_out"):
        values[blind, col[name]] = np.nan

    hours_unheard = _hours_unheard(events, frames, day, ds)
    nobody_home = sensed & (_count(row[day & motion], n) == 0)
    away = frames.away | nobody_home | (np.nan_to_num(values[:, col["time_out"]]) >= params.away_hours)
    usable = (hours_unheard <= params.max_unheard_hours) & ~away
    return Daily(values=values, hours_unheard=hours_unheard, usable=usable, away=away)
