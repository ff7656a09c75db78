"""The simulated clock keeps every published `ts` inside the window the gateway accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from simulators import ClockError, Fleet, SimClock, default_start
from simulators.clock import EARLIEST
from simulators.wire import TsFormatter, format_ts, from_ms, to_ms
from trygg.contract import MAX_FUTURE, MAX_PAST, parse_event, parse_timestamp

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def clock(start: datetime, speed: float, lead: timedelta = timedelta(0)) -> tuple[SimClock, FakeMonotonic]:
    mono = FakeMonotonic()
    return SimClock(start, speed, max_lead=lead, wall=lambda: NOW, monotonic=mono), mono


def test_a_run_with_a_duration_ends_at_the_wall_clock() -> None:
    start = default_start(NOW, speed=60, duration_s=600)
    assert start == NOW - timedelta(seconds=59 * 600)
    c, mono = clock(start, 60)
    mono.t += 600
    assert from_ms(c.now_ms()) == NOW + timedelta(seconds=600)  # = the wall clock then


def test_the_start_is_never_more_than_29_days_back() -> None:
    start = default_start(NOW, speed=10_000, duration_s=3600)
    assert start == NOW - EARLIEST


@pytest.mark.parametrize(("speed", "lead_h"), [(1, 0), (60, 0), (1000, 0), (5000, 23), (0.5, 2)])
def test_the_simulated_clock_never_runs_past_wall_plus_lead(speed: float, lead_h: float) -> None:
    lead = timedelta(hours=lead_h)
    c, mono = clock(default_start(NOW, speed, None), speed, lead)
    for step in range(0, 200_000, 997):
        mono.t = 1000.0 + step
        sim = from_ms(c.now_ms())
        wall = NOW + timedelta(seconds=step)
        assert wall - EARLIEST <= sim <= wall + lead
        assert sim + MAX_PAST > wall and sim - MAX_FUTURE < wall


def test_real_at_inverts_the_clock() -> None:
    c, mono = clock(NOW - timedelta(days=2), 100, timedelta(hours=1))
    for target_h in (0.5, 10, 47, 49, 60):
        at = to_ms(NOW - timedelta(days=2) + timedelta(hours=target_h))
        mono.t = 1000.0 + c.real_at(at)
        assert abs(c.now_ms() - at) <= 2


def test_a_start_the_gateway_would_refuse_is_refused() -> None:
    with pytest.raises(ClockError, match="30 days"):
        clock(NOW - timedelta(days=31), 1)
    with pytest.raises(ClockError, match="24 h"):
        clock(NOW + timedelta(hours=2), 1)
    clock(NOW + timedelta(hours=2), 1, timedelta(hours=3))  # allowed with a lead


def test_a_fast_fleet_publishes_only_acceptable_timestamps() -> None:
    """Every message, received when the clock publishes it, passes the gateway's ts check."""
    speed, duration = 3000.0, 120.0
    start = default_start(NOW, speed, duration)
    fleet = Fleet(6, 5, start)
    c, _ = clock(start, speed)
    for msg in fleet.messages(until=from_ms(c.sim_ms(duration))):
        if msg.channel == "events":
            received = NOW + timedelta(seconds=c.real_at(msg.at_ms))
            parse_event(msg.device_id, msg.payload, received)  # raises on a bad ts


@pytest.mark.parametrize("around", [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Oslo: 02:00 CET -> 03:00 CEST
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Oslo: 03:00 CEST -> 02:00 CET
])
def test_timestamps_carry_the_right_offset_across_daylight_saving(around: datetime) -> None:
    zone = ZoneInfo("Europe/Oslo")
    fmt = TsFormatter(zone)
    base = to_ms(around)
    for delta_s in range(-7200, 7200, 37):
        ms = base + delta_s * 1000 + 123
        assert fmt(ms) == format_ts(ms, zone)
        assert parse_timestamp(fmt(ms)) == from_ms(ms)


def test_a_fleet_lives_through_the_night_the_clocks_change() -> None:
    start = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    fleet = Fleet(12, 4, start)
    for msg in fleet.messages(until=start + timedelta(days=2)):
        if msg.channel == "events":
            event = parse_event(msg.device_id, msg.payload, msg.at())
            assert to_ms(event.ts) == msg.ts_ms
