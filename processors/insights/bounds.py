"""A resident's day as UTC instants: local midnight to midnight, and the night before.

`frame_bounds(day, zone, night_start, night_end)` gives the `trygg.insights.Frames` row's
four instants (UTC epoch seconds). The day is [local 00:00 of `day`, local 00:00 of the
next day): 23, 24 or 25 hours around a daylight-saving change. The night is the resident's
night window that ends on `day`'s morning: for 23:00–06:00 from 23:00 on the day before to
06:00 on `day`; for a window within one day (01:00–05:00) the one on `day`; an empty window
(start == end) gives night_start == night_end. Wall-clock times that do not exist (02:30
on the spring change) are read as the instant after the gap; times that occur twice as
their first occurrence (`zoneinfo` fold 0).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from processors.localtime import zone as zone_of


def _instant(day: date, at: time, zone: str) -> float:
    wall = datetime.combine(day, at, tzinfo=zone_of(zone))
    # A wall time inside the spring gap does not round-trip; move it to the gap's end.
    back = wall.astimezone(UTC).astimezone(zone_of(zone))
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
