"""Wall-clock time of a resident: time zones, night windows, daytime hours.

Every instant inside the processors is an aware `datetime`; rules compare them in UTC and
convert to the resident's zone (registry `timezone`, default ``Europe/Oslo``) only to ask
wall-clock questions:

- *Is this instant inside the night window?* A window is two wall-clock times. When
  ``start < end`` it is ``[start, end)`` on the same day; when ``start > end`` it runs
  across midnight, ``[start, 24:00) ∪ [00:00, end)``; when ``start == end`` it is empty
  (the resident has no night window). Because the question is asked of the local wall
  clock, a night window of 23:00–06:00 ends at 04:00 UTC in Oslo summer time and at
  05:00 UTC in winter, and a night that contains a daylight-saving change is one hour
  shorter (March) or longer (October) in real time.

- *When has a resident been without activity for N daytime hours?* Only time between
  07:00 and 22:00 local wall-clock time counts (`DAY_START`, `DAY_END`); see
  `add_daytime` and `daytime_between`. Daytime is measured in real elapsed time, so the
  rare day whose 07:00–22:00 contains a clock change counts the hours that really passed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

DEFAULT_ZONE: Final = "Europe/Oslo"
#: Daytime for the inactivity rule (docs/contract.md#4-rules-and-alerts): only these local hours count.
DAY_START: Final = time(7, 0)
DAY_END: Final = time(22, 0)


@lru_cache(maxsize=256)
def zone(name: str = DEFAULT_ZONE) -> ZoneInfo:
    """The `ZoneInfo` of an IANA name, cached (registry values are validated already)."""
    return ZoneInfo(name)


def as_utc(instant: datetime) -> datetime:
    """The same instant in UTC; refuses naive datetimes, which have no defined instant."""
    tz = instant.tzinfo
    if tz is UTC:
        return instant
    if tz is None:
        raise ValueError(f"naive datetime {instant.isoformat()} has no time zone")
    return instant.astimezone(UTC)


def local(instant: datetime, tz: ZoneInfo) -> datetime:
    """The wall-clock time of `instant` in `tz`."""
    return as_utc(instant).astimezone(tz)


def in_window(instant: datetime, start: time, end: time, tz: ZoneInfo) -> bool:
    """True when the local wall-clock time of `instant` lies in ``[start, end)``.

    Windows with ``start > end`` run across midnight; ``start == end`` is an empty window.
    """
    wall = local(instant, tz).time().replace(tzinfo=None)
    if start < end:
        return start <= wall < end
    if start > end:
        return wall >= start or wall < end
    return False


def at_wall_clock(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the wall clock in `tz` shows `wall` on `day`.

    A wall time skipped by a spring-forward change is read with the offset before the
    change (so 02:30 on the March change day is 01:30 UTC in Oslo, the instant the clocks
    jump); a wall time repeated in October is its first occurrence (``fold=0``).
    """
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)


def _daytime_spans(start: datetime, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The daytime span of `start`'s local day as UTC instants (empty if DAY_START == END)."""
    day = local(start, tz).date()
    lo = at_wall_clock(day, DAY_START, tz)
    hi = at_wall_clock(day, DAY_END, tz)
    return [(lo, hi)] if lo < hi else []


def add_daytime(start: datetime, amount: timedelta, tz: ZoneInfo) -> datetime:
    """The first instant at which `amount` of daytime has passed since `start` (UTC).

    Only time between `DAY_START` and `DAY_END` local time counts. Examples with 12 h in
    Oslo: from 07:00 the answer is 19:00 the same day; from 20:00 it is 17:00 the next day
    (2 h that evening, 10 h the next day); from 23:30 it is 19:00 the next day. The answer
    always lies inside daytime (or is `start` itself when `amount` is zero).
    """
    cursor = as_utc(start)
    remaining = amount
    if remaining <= timedelta(0):
        return cursor
    for _ in range(int(remaining / timedelta(hours=1)) + 800):  # bounded: >= 1 h per day
        for lo, hi in _daytime_spans(cursor, tz):
            begin = max(lo, cursor)
            if begin < hi:
                if begin + remaining <= hi:
                    return begin + remaining
                remaining -= hi - begin
        next_day = local(cursor, tz).date() + timedelta(days=1)
        cursor = at_wall_clock(next_day, time(0, 0), tz)
    raise ValueError("daytime window is empty; inactivity can never be counted")


def daytime_between(earlier: datetime, later: datetime, tz: ZoneInfo) -> timedelta:
    """How much daytime (07:00–22:00 local) lies between two instants."""
    cursor = as_utc(earlier)
    end = as_utc(later)
    total = timedelta(0)
    while cursor < end:
        for lo, hi in _daytime_spans(cursor, tz):
            begin, finish = max(lo, cursor), min(hi, end)
            if begin < finish:
                total += finish - begin
        next_day = local(cursor, tz).date() + timedelta(days=1)
        cursor = at_wall_clock(next_day, time(0, 0), tz)
    return total


def isoformat_utc(instant: datetime, timespec: str = "milliseconds") -> str:
    """A deterministic UTC time stamp, e.g. ``2026-11-22T13:03:07.120Z`` (markers, state)."""
    return as_utc(instant).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Read back `isoformat_utc` (or any ISO 8601 time with an offset) as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return as_utc(value)
