"""Research windows are widened to whole buckets and whole days in Europe/Oslo, so that
answers change only by whole buckets (docs/research.md "What is guaranteed")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard.research import floor_to, next_bucket, research_window
from trygg.errors import SettingsError
from trygg.settings import load_settings

US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_ends_a_microsecond_apart_give_one_window() -> None:
    press = utc(2026, 11, 18, 14, 3, 7, 120000)
    assert research_window(utc(2026, 11, 18), press, "hour") == research_window(utc(2026, 11, 18), press + US, "hour")
    assert research_window(press - timedelta(seconds=1), press + timedelta(seconds=1), "hour") == (
        utc(2026, 11, 17, 23), utc(2026, 11, 18, 23))  # the Oslo day around it


def test_whole_buckets_stay_as_they_are() -> None:
    assert research_window(utc(2026, 11, 17, 23), utc(2026, 11, 19, 23), "day") == (
        utc(2026, 11, 17, 23), utc(2026, 11, 19, 23))


@pytest.mark.parametrize(("unit", "t", "start", "after"), [
    ("hour", utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
    ("day", utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),  # 23-hour day (summer time)
    ("day", utc(2026, 10, 25, 12), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),  # 25-hour day
    ("week", utc(2026, 11, 18, 12), utc(2026, 11, 15, 23), utc(2026, 11, 22, 23)),  # from Monday
    ("month", utc(2026, 12, 31, 23, 30), utc(2026, 12, 31, 23), utc(2027, 1, 31, 23)),  # 1 January in Oslo
])
def test_buckets_are_cut_in_oslo(unit: str, t: datetime, start: datetime, after: datetime) -> None:
    assert floor_to(unit, t) == start
    assert next_bucket(unit, start) == after


def test_time_grain_is_never_finer_than_the_hour_and_groups_never_under_five() -> None:
    with pytest.raises(SettingsError):
        load_settings(research_time_grain="minute")
    with pytest.raises(SettingsError):
        load_settings(research_min_group=4)
    with pytest.raises(SettingsError):
        load_settings(metrics_allow="127.0.0.1,not-an-address")
    assert load_settings(metrics_allow="10.0.0.0/8, ::1").metrics_allow == "10.0.0.0/8, ::1"
