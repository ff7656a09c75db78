"""Playing simulated streams over MQTT on a simulated clock: the fleet and the scenarios.

`play` publishes each `SimMessage` when the `SimClock` reaches its publication time; if
publishing falls behind (a slow broker, a very high speed) messages go out as fast as the
window of in-flight messages allows, and the lag is reported. `run_fleet` and
`run_scenario` wire a stream, a clock and a `ConnectionPool` together.

The simulator runs on one asyncio loop, its connections included: `play_fleet` and
`play_scenario` are coroutines for a loop one already has, `run_fleet` and `run_scenario`
run them on a loop of their own in the calling thread. To run a fleet beside an asyncio program without
taking its loop's time, e.g. `trygg up --demo`, call `run_fleet` in a worker thread and
stop it with the event::

    stop = threading.Event()
    task = asyncio.create_task(asyncio.to_thread(run_fleet, fleet, target, prefix, stop=stop))
    ...
    stop.set(); await task
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from simulators.clock import SimClock
from simulators.connections import ConnectionPool, MqttTarget
from simulators.fleet import Fleet
from simulators.report import ProgressFn, RunStats, blocking
from simulators.scenarios import Scenario
from simulators.wire import SimMessage

PROGRESS_EVERY_S = 0.25


async def play(
    messages: Iterable[SimMessage],
    pool: ConnectionPool,
    clock: SimClock,
    *,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Publish `messages` (ordered by `at_ms`) on the clock's time, for `duration_s` real
    seconds at most (None: until the stream ends or `stop` is set)."""
    stats = stats if stats is not None else RunStats()
    next_report = 0.0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def report() -> None:
        nonlocal next_report
        now = clock.elapsed()
        if on_progress is not None and now >= next_report:
            stats.acked = pool.acked
            on_progress(stats)
            next_report = now + PROGRESS_EVERY_S

    for msg in messages:
        due = clock.real_at(msg.at_ms)
        if duration_s is not None and due > duration_s:
            break
        while not stopped():
            wait = due - clock.elapsed()
            if wait <= 0:
                break
            await asyncio.sleep(min(wait, 0.1))
            report()
        if stopped():
            break
        await pool.send(msg)
        stats.add(msg, max(clock.elapsed() - due, 0.0))
        report()
    while duration_s is not None and not stopped() and clock.elapsed() < duration_s:
        await asyncio.sleep(min(duration_s - clock.elapsed(), 0.1))
        report()
    await pool.flush(timeout_s=10.0)
    stats.acked = pool.acked
    return stats.finish()


async def play_fleet(
    fleet: Fleet,
    target: MqttTarget,
    prefix: str = "trygg/v1",
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    max_lead: timedelta = timedelta(0),
    connections: int = 4,
    window: int = 100,
    offline_on_exit: bool = True,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
) -> RunStats:
    """Publish the fleet's stream in (simulated) time; see `simulators.clock` for why every
    `ts` stays within what the gateway accepts."""
    messages = fleet.messages()
    first = next(messages)  # the first simulated day is generated before the clock starts
    stats = RunStats(mode="fleet")
    async with ConnectionPool(target, fleet.device_groups(), prefix, connections=connections,
                              window=window) as pool:
        clock = SimClock(fleet.start, speed, max_lead=max_lead)
        try:
            await play(itertools.chain([first], messages), pool, clock, duration_s=duration_s,
                       stop=stop, on_progress=on_progress, stats=stats)
        finally:
            await pool.close(offline=offline_on_exit)
            stats.published, stats.acked = pool.published, pool.acked
    return stats


run_fleet = blocking(play_fleet)


async def play_scenario(
    scenario: Scenario,
    target: MqttTarget,
    prefix: str = "trygg/v1",
    *,
    speed: float = 1.0,
    t0: datetime | None = None,
    run: str | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
) -> RunStats:
    """Play a scenario live. Without `t0` it starts at its local time of day on the latest
    day on which it is over by now, so every `ts` lies in the recent past; event ids carry
    a tag of the wall clock, so playing it again is not taken for re-sends."""
    now = datetime.now(UTC)
    if t0 is None:
        t0 = scenario.latest_start(now)
    if run is None:
        run = f"sc{int(time.time() * 1000):x}"
    groups = [[d.id for d in r.devices] for r in scenario.registry.residents]
    stats = RunStats(mode=f"scenario {scenario.name}")
    async with ConnectionPool(target, groups, prefix, connections=len(groups)) as pool:
        clock = SimClock(t0, speed)
        try:
            await play(scenario.messages(t0, run), pool, clock, stop=stop,
                       on_progress=on_progress, stats=stats)
        finally:
            await pool.close(offline=False)
            stats.published, stats.acked = pool.published, pool.acked
    return stats


run_scenario = blocking(play_scenario)


__all__ = ["play", "play_fleet", "play_scenario", "run_fleet", "run_scenario"]
