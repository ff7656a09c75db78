"""Early signs of decline (docs/insights.md): the shapes every part shares.

A resident's *day* is one local calendar day D in the resident's time zone, together with
the night window that ends on D's morning (a 23:00–06:00 window: from 23:00 on D-1 to
06:00 on D). Its features are therefore known once D's local midnight has passed.

The computation is columnar: the events of many residents' days come as one `Events`
(parallel numpy arrays, sorted by resident row and time), the days themselves as one
`Frames` (a row per resident-day). `processors/insights` turns them into daily features
and change notices; `storage/insights_store.py` reads and writes them; the simulator of
declining residents produces them directly. None of these imports the others: this
module is what they agree on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I16 = npt.NDArray[np.int16]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]


class Kind(IntEnum):
    """What a row of `Events` is."""

    MOTION = 1  # `motion` (room: the sensor's room)
    DOOR_OPENED = 2  # `door.opened`
    DOOR_CLOSED = 3  # `door.closed`
    LOCK = 4  # `door.unlocked` / `door.locked`
    BUTTON = 5  # `alarm.button`
    LOCATION = 6  # a `location` fix usable that day (a valid location basis), lat/lon set
    HEARD = 7  # a motion or door sensor was heard (a heartbeat) in the hour around `t`; only those


#: Room codes: 0 = unknown; the bathroom (bad, toalett, wc) has its own code, every other
#: named room a code of its own within the resident (`room_code`).
ROOM_UNKNOWN: Final = 0
ROOM_BATHROOM: Final = 1

#: Room names (lower case) that count as the bathroom or toilet, Norwegian and English.
BATHROOM_NAMES: Final = frozenset({"bathroom", "toilet", "wc", "restroom", "bad", "baderom", "toalett", "do"})
#: Door names that lead out of the home; a door event without a name is the front door.
EXIT_DOORS: Final = frozenset({"front", "back", "main", "entrance", "hoveddør", "inngang", "ytterdør", "bakdør"})


#: `Frames.capabilities` bits
CAP_ROOMS: Final = 1  # motion sensors with known rooms (room transitions)
CAP_BATHROOM: Final = 2  # a motion sensor in the bathroom or toilet
CAP_EXIT_DOOR: Final = 4  # a door sensor on a door that leads out
CAP_GPS: Final = 8  # a gps_tracker or phone


def room_code(name: str | None, codes: dict[str, int]) -> int:
    """The code of a room name within one resident (`codes` is that resident's table, filled
    as names are met: the same name gets the same code)."""
    if not name:
        return ROOM_UNKNOWN
    key = name.strip().lower()
    if key in BATHROOM_NAMES:
        return ROOM_BATHROOM
    return codes.setdefault(key, len(codes) + 2)


def is_exit_door(name: str | None) -> bool:
    return name is None or name.strip().lower() in EXIT_DOORS


@dataclass(frozen=True, slots=True)
class Events:
    """Events of many resident-days, one row each, sorted by (`row`, `t`).

    `row` indexes `Frames`; `t` is UTC epoch seconds; `device` is any integer unique to
    a device within the batch (quality: which sensors were heard); `room` is a room code
    (motion only, else 0); `exit` marks door events of a door that leads out; `lat`,
    `lon` are set for `Kind.LOCATION` rows and NaN elsewhere; `accuracy_m` likewise.
    The rows cover at least [frame.night_start, frame.day_end) of their frame.
    """

    row: I32
    t: F64
    kind: I8
    device: I32
    room: I16
    exit: B
    lat: F64
    lon: F64
    accuracy_m: F32

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def empty() -> Events:
        return Events(np.zeros(0, np.int32), np.zeros(0, np.float64), np.zeros(0, np.int8), np.zeros(0, np.int32),
                      np.zeros(0, np.int16), np.zeros(0, np.bool_), np.zeros(0, np.float64), np.zeros(0, np.float64),
                      np.zeros(0, np.float32))


@dataclass(frozen=True, slots=True)
class Frames:
    """One row per resident-day, all arrays of one length.

    `day_start`, `day_end`: UTC epoch seconds of local midnight D and D+1 (23, 24 or 25 h
    apart); `night_start`, `night_end`: the night window that ends on D's morning (equal
    when the resident has no night window); `activity_sensors`: motion and door sensors
    the registry lists for the resident (the quality check expects each to be heard
    every hour); `away`: the registry says the resident is away that day (hospital,
    travel); `located`: positions may be used that day (a valid location basis);
    `capabilities`: what the registry says the resident's sensors can see (CAP_* bits),
    so that no toilet visit is a 0 and not "no sensor in the bathroom".
    """

    day_start: F64
    day_end: F64
    night_start: F64
    night_end: F64
    activity_sensors: I16
    away: B
    located: B
    #: what the resident's sensors can tell (CAP_* bits), or None: inferred from the rows
    capabilities: I16 | None = None

    def __len__(self) -> int:
        return len(self.day_start)


class Direction(IntEnum):
    """Which way a feature moves when a person declines."""

    UP = 1  # more is worse (night activity, toilet visits)
    DOWN = -1  # less is worse (active hours, trips out)
    EITHER = 0  # a change either way is worth a look (last activity of the day)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    unit_en: str
    unit_nb: str
    label_en: str
    label_nb: str
    direction: Direction
    #: the smallest spread the baseline is given (a resident who is very regular does
    #: not get a notice for a change nobody would notice), in the feature's unit
    min_scale: float
    decimals: int = 1
    #: the value is a local clock time in hours (7.5 = 07:30); shown as HH:MM
    clock: bool = False
    #: a count of happenings (Poisson-like): judged on its square root, whose spread does
    #: not grow with the count and whose days are not skewed towards the high side
    count: bool = False
    #: the change detection watches it; a feature that is not watched is computed, charted
    #: and given to research, but raises no notice
    watched: bool = True


#: The daily features, in column order (docs/insights.md "The daily features").
FEATURES: Final[tuple[Feature, ...]] = (
    Feature("active_hours", "h", "t", "Active hours", "Aktive timer", Direction.DOWN, 0.75),
    Feature("first_activity", "", "", "First activity of the day", "Første aktivitet om morgenen", Direction.UP,
            0.5, clock=True),
    Feature("last_activity", "", "", "Last activity of the evening", "Siste aktivitet om kvelden",
            Direction.EITHER, 0.5, clock=True, watched=False),
    Feature("night_activity", "min", "min", "Activity at night", "Aktivitet om natten", Direction.UP, 10.0, 0,
            count=True),
    Feature("night_toilet_visits", "per night", "per natt", "Night-time toilet visits", "Nattlige toalettbesøk",
            Direction.UP, 0.5, count=True),
    Feature("room_transitions", "per day", "per dag", "Moves between rooms", "Bytter mellom rom",
            Direction.DOWN, 4.0, 0, count=True),
    Feature("door_exits", "per day", "per dag", "Trips out", "Turer ut", Direction.DOWN, 0.5, count=True),
    Feature("time_out", "h", "t", "Time out of home", "Tid ute", Direction.DOWN, 0.5),
    Feature("walk_km", "km", "km", "Distance walked outdoors", "Gått utendørs", Direction.DOWN, 0.3),
    Feature("button_presses", "per day", "per dag", "Alarm button presses", "Trykk på alarmknappen",
            Direction.UP, 0.5, count=True),
)
FEATURE_INDEX: Final = {f.name: i for i, f in enumerate(FEATURES)}


@dataclass(frozen=True, slots=True)
class Daily:
    """The features of each frame: `values[i, j]` is feature j of frame i, NaN when it
    cannot be known that day (no sensor for it, sensors silent). `hours_unheard`: local
    hours of the day in which one of the resident's activity sensors was not heard;
    `usable`: the day may enter the baseline and the change detection; `away`: the
    resident was away (registry, or out of home most of the day)."""

    values: F64
    hours_unheard: I16
    usable: B
    away: B


@dataclass(frozen=True, slots=True)
class Params:
    """Settings of the baseline and change detection (trygg/settings.py TRYGG_INSIGHTS_*;
    the reasoning behind each default is in docs/insights.md)."""

    baseline_days: int = 42  # usable days in the baseline
    min_days: int = 14  # usable days before any notice
    z_clip: float = 2.0  # a day's z, on the declining side, is clipped to ± this
    slow_k: float = 0.2  # the slow CUSUM's allowance (half the shift it is made to find, in spreads)
    slow_h: float = 13.0  # and its limit
    fast_k: float = 1.0  # the fast CUSUM's allowance (a sudden change)
    fast_h: float = 3.5  # and its limit
    cooldown_days: int = 14  # days after a notice before the same feature may notice again
    max_unheard_hours: int = 3  # a day with more unheard hours is not usable
    away_hours: float = 16.0  # out of home this long: the day counts as away
    window_days: int = 14  # the notice's "last N days" mean, at most
    guard_days: int = 14  # the newest days left out of the baseline (a slow trend is not absorbed)


@dataclass(frozen=True, slots=True)
class Notice:
    """A change worth a look, for staff: never an alarm.

    `value`: the mean of the usable days of the last `window_days`; `usual`: the
    baseline median; `low`, `high`: the baseline band (median ± 2 robust spreads)."""

    row: int  # the frame it was raised on
    feature: str
    direction: Direction
    value: float
    usual: float
    low: float
    high: float
    window_days: int
    reason_nb: str
    reason_en: str


@dataclass(frozen=True, slots=True)
class Bands:
    """The baseline each frame's day was judged against, for the chart: (frames, features)
    arrays, NaN while there is no baseline yet (fewer than `Params.min_days` usable days)."""

    usual: F64
    low: F64
    high: F64


# --- a resident's day as UTC instants ---------------------------------------------------
# The day is [local 00:00 of `day`, local 00:00 of the next day): 23, 24 or 25 hours around
# a clock change. The night is the resident's night window that ends on `day`'s morning
# (23:00–06:00: from 23:00 the day before); an empty window (start == end) gives
# night_start == night_end. A wall time inside the spring gap is read as the instant after
# the gap; one that occurs twice as its first occurrence (fold 0).

def _instant(day: date, at: time, zone: str) -> float:
    tz = ZoneInfo(zone)  # ZoneInfo keeps one instance per name itself
    wall = datetime.combine(day, at, tzinfo=tz)
    # A wall time inside the spring gap does not round-trip; move it to the gap's end.
    back = wall.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != wall.replace(tzinfo=None):
        wall = back
    return wall.astimezone(UTC).timestamp()


@lru_cache(maxsize=4096)
def frame_bounds(day: date, zone: str, night_start: time, night_end: time) -> tuple[float, float, float, float]:
    """(day_start, day_end, night_start, night_end) of `day` in `zone`, UTC epoch seconds."""
    day_start = _instant(day, time(0), zone)
    day_end = _instant(day + timedelta(days=1), time(0), zone)
    if night_start == night_end:
        return day_start, day_end, day_start, day_start
    start_day = day - timedelta(days=1) if night_start > night_end else day
    return day_start, day_end, _instant(start_day, night_start, zone), _instant(day, night_end, zone)
