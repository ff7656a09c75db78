"""Resident wall-clock time: night windows, DST changes in Oslo, daytime counting."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from processors.localtime import (
    add_daytime,
    at_wall_clock,
    daytime_between,
    in_window,
    isoformat_utc,
    parse_iso,
)

OSLO = ZoneInfo("Europe/Oslo")
NIGHT = (time(23, 0), time(6, 0))


def oslo(y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=OSLO, fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("wall", "inside"),
    [
        ((22, 59), False),
        ((23, 0), True),
        ((0, 0), True),
        ((3, 30), True),
        ((5, 59), True),
        ((6, 0), False),
        ((12, 0), False),
    ],
)
def test_night_window_across_midnight(wall: tuple[int, int], inside: bool) -> None:
    assert in_window(oslo(2026, 11, 22, *wall), *NIGHT, OSLO) is inside


def test_window_not_across_midnight() -> None:
    start, end = time(1, 0), time(5, 0)
    assert not in_window(oslo(2026, 1, 10, 0, 30), start, end, OSLO)
    assert in_window(oslo(2026, 1, 10, 1, 0), start, end, OSLO)
    assert in_window(oslo(2026, 1, 10, 4, 59), start, end, OSLO)
    assert not in_window(oslo(2026, 1, 10, 5, 0), start, end, OSLO)
    assert not in_window(oslo(2026, 1, 10, 23, 30), start, end, OSLO)


def test_equal_start_and_end_is_no_window() -> None:
    assert not in_window(oslo(2026, 1, 10, 3, 0), time(4, 0), time(4, 0), OSLO)


def test_night_ends_at_six_local_time_in_summer_and_winter() -> None:
    # 04:30 UTC is 05:30 in winter (night) but 06:30 in summer (day)
    winter = datetime(2026, 1, 15, 4, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 4, 30, tzinfo=UTC)
    assert in_window(winter, *NIGHT, OSLO)
    assert not in_window(summer, *NIGHT, OSLO)


def test_night_window_on_spring_forward_sunday() -> None:
    # 2026-03-29: clocks go from 02:00 CET to 03:00 CEST; the night is one hour shorter
    assert in_window(datetime(2026, 3, 29, 0, 59, tzinfo=UTC), *NIGHT, OSLO)  # 01:59 CET
    assert in_window(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), *NIGHT, OSLO)  # 03:00 CEST
    assert in_window(datetime(2026, 3, 29, 3, 59, tzinfo=UTC), *NIGHT, OSLO)  # 05:59 CEST
    assert not in_window(datetime(2026, 3, 29, 4, 0, tzinfo=UTC), *NIGHT, OSLO)  # 06:00 CEST
    assert not in_window(datetime(2026, 3, 29, 4, 30, tzinfo=UTC), *NIGHT, OSLO)


def test_night_window_on_fall_back_sunday() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, the night is longer
    first = oslo(2026, 10, 25, 2, 30, fold=0)
    second = oslo(2026, 10, 25, 2, 30, fold=1)
    assert second - first == timedelta(hours=1)
    assert in_window(first, *NIGHT, OSLO)
    assert in_window(second, *NIGHT, OSLO)
    assert in_window(datetime(2026, 10, 25, 4, 59, tzinfo=UTC), *NIGHT, OSLO)  # 05:59 CET
    assert not in_window(datetime(2026, 10, 25, 5, 0, tzinfo=UTC), *NIGHT, OSLO)  # 06:00 CET
    night_start = oslo(2026, 10, 24, 23, 0)
    night_end = oslo(2026, 10, 25, 6, 0)
    assert night_end - night_start == timedelta(hours=8)


def test_wall_time_skipped_in_spring_maps_to_the_jump() -> None:
    assert at_wall_clock(date(2026, 3, 29), time(2, 30), OSLO) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (oslo(2026, 11, 23, 7, 0), oslo(2026, 11, 23, 19, 0)),
        (oslo(2026, 11, 23, 5, 0), oslo(2026, 11, 23, 19, 0)),  # night hours do not count
        (oslo(2026, 11, 23, 20, 0), oslo(2026, 11, 24, 17, 0)),  # 2 h + 10 h
        (oslo(2026, 11, 23, 23, 30), oslo(2026, 11, 24, 19, 0)),
        (oslo(2026, 11, 23, 10, 0), oslo(2026, 11, 23, 22, 0)),  # exactly the day's end
    ],
)
def test_twelve_daytime_hours(start: datetime, expected: datetime) -> None:
    assert add_daytime(start, timedelta(hours=12), OSLO) == expected


def test_daytime_counting_over_the_spring_change() -> None:
    # Saturday 20:00 CET: 2 h that evening, 10 h on the short Sunday → 17:00 CEST
    start = oslo(2026, 3, 28, 20, 0)
    due = add_daytime(start, timedelta(hours=12), OSLO)
    assert due == datetime(2026, 3, 29, 15, 0, tzinfo=UTC)
    assert due - start == timedelta(hours=20)  # 21 wall-clock hours, one of them skipped


def test_long_limits_span_several_days() -> None:
    start = oslo(2026, 11, 23, 7, 0)
    assert add_daytime(start, timedelta(hours=40), OSLO) == oslo(2026, 11, 25, 17, 0)


def test_daytime_between_counts_only_07_to_22() -> None:
    assert daytime_between(oslo(2026, 11, 23, 20, 0), oslo(2026, 11, 24, 9, 0), OSLO) == timedelta(hours=4)
    assert daytime_between(oslo(2026, 11, 23, 22, 0), oslo(2026, 11, 24, 7, 0), OSLO) == timedelta(0)
    start = oslo(2026, 11, 23, 13, 17)
    assert daytime_between(start, add_daytime(start, timedelta(hours=12), OSLO), OSLO) == timedelta(hours=12)


def test_other_time_zones_use_their_own_wall_clock() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    # 14:00 UTC is 23:00 in Tokyo
    assert in_window(datetime(2026, 11, 22, 14, 0, tzinfo=UTC), *NIGHT, tokyo)
    assert not in_window(datetime(2026, 11, 22, 14, 0, tzinfo=UTC), *NIGHT, OSLO)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        in_window(datetime(2026, 1, 1, 3, 0), *NIGHT, OSLO)


def test_iso_round_trip() -> None:
    instant = datetime(2026, 11, 22, 13, 3, 7, 120000, tzinfo=UTC)
    assert isoformat_utc(instant) == "2026-11-22T13:03:07.120Z"
    assert parse_iso(isoformat_utc(instant, "microseconds")) == instant
