"""When the alarm watch opens and closes (gateway/alarm_watch.py), on an injected clock."""

from __future__ import annotations

import asyncio

from gateway.alarm_watch import URGENT, Watchman


class FakeWatch:
    url = "mqtt://test"

    def __init__(self) -> None:
        self.opened = False
        self.closed = False

    async def __aenter__(self) -> FakeWatch:
        self.opened = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(stalled: list[bool]) -> tuple[Watchman, list[FakeWatch], Clock]:
    watches: list[FakeWatch] = []
    clock = Clock()

    def open_watch() -> FakeWatch:
        watches.append(FakeWatch())
        return watches[-1]

    watchman = Watchman(lambda: stalled[0], open_watch, quiet_s=30, clock=clock)  # type: ignore[arg-type]
    return watchman, watches, clock


def test_the_watch_opens_on_a_stall_and_stays_open_until_acknowledgements_flow_for_a_while() -> None:
    stalled = [False]
    watchman, watches, clock = make(stalled)

    async def run() -> None:
        await watchman.check()
        assert watches == []
        stalled[0] = True
        await watchman.check()
        assert len(watches) == 1 and watches[0].opened
        await watchman.check()  # still stalled: the same watch
        assert len(watches) == 1
        stalled[0] = False
        clock.now += 29
        await watchman.check()
        assert not watches[0].closed, "closed before acknowledgements flowed for QUIET_S"
        clock.now += 1
        await watchman.check()
        assert watches[0].closed and watchman.watch is None

    asyncio.run(run())


def test_a_new_stall_while_quiet_keeps_the_watch_open() -> None:
    stalled = [True]
    watchman, watches, clock = make(stalled)

    async def run() -> None:
        await watchman.check()
        stalled[0] = False
        clock.now += 20
        await watchman.check()
        stalled[0] = True
        await watchman.check()
        stalled[0] = False
        clock.now += 20
        await watchman.check()
        assert len(watches) == 1 and not watches[0].closed

    asyncio.run(run())


def test_a_failing_probe_counts_as_a_stall() -> None:
    def probe() -> bool:
        raise RuntimeError("writer gone")

    watches: list[FakeWatch] = []
    watchman = Watchman(probe, lambda: watches.append(FakeWatch()) or watches[-1])  # type: ignore[arg-type,func-returns-value]
    asyncio.run(watchman.check())
    assert len(watches) == 1 and watches[0].opened


def test_the_urgent_lane_matches_alarms_falls_smoke_and_cancels_only() -> None:
    for kind in ("alarm.button", "alarm.auto", "alarm.cancel", "fall.detected", "smoke.detected"):
        assert URGENT.search(f'{{"id":"e","type":"{kind}"}}'.encode()), kind
    for kind in ("heartbeat", "motion", "door.opened", "location", "battery.low"):
        assert not URGENT.search(f'{{"id":"e","type":"{kind}"}}'.encode()), kind
