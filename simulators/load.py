"""Load mode: valid events at a fixed rate, or as fast as one process can publish them.

For benchmarks of the ingest path (docs/contract.md#9-performance-budgets). The devices are those of
`registry_gen.load_registry(residents)` (load it into Trygg first, or every event is a dead
letter): each resident has an alarm unit, which sends heartbeats, and a motion sensor,
which sends `motion` and heartbeats with `battery_pct` in turn. `ts` is the wall clock
(there is no simulated clock in load mode) and ids are `{run}-{n}`, unique across runs.
No status messages are sent.

Every message is QoS 1 with a bounded in-flight window per connection, so the rate
reported is the rate the broker *acknowledged*. With `rate=None` the loop never sleeps:
one process reached about 23,000 events/s (2,000 devices on one connection; 22,000 on
four) against Mosquitto on 127.0.0.1 on a busy 2-core machine, where the client used
before reached 10,000 (the MQTT client's per-message cost in Python is the limit; run
several processes for more). `run_load` runs `play_load` on a loop of its own in the
calling thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC

from simulators.connections import ConnectionPool, MqttTarget
from simulators.registry_gen import load_devices
from simulators.report import ProgressFn, RunStats, blocking
from simulators.wire import TsFormatter, run_tag
from trygg.contract import events_topic

_CHECK_EVERY = 256  # messages between looks at the clock, the stop flag and progress


async def play_load(
    target: MqttTarget,
    prefix: str = "trygg/v1",
    *,
    rate: float | None = None,
    count: int | None = None,
    duration_s: float | None = None,
    residents: int = 1000,
    connections: int = 1,
    window: int = 100,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
) -> RunStats:
    """Publish `count` events (or for `duration_s`, or until `stop`) at `rate` per second
    (None: as fast as possible); returns what was sent and acknowledged."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 (None for as fast as possible)")
    if residents < 1:
        raise ValueError("load mode needs at least one resident")
    devices = load_devices(residents)
    groups = [[devices[i][0], devices[i + 1][0]] for i in range(0, len(devices), 2)]
    stats = RunStats(mode="load")
    async with ConnectionPool(target, groups, prefix, connections=connections, window=window,
                              announce=False, client_id_prefix="trygg-load") as pool:
        try:
            await _loop(pool, devices, prefix, stats, rate, count, duration_s, stop, on_progress)
            await pool.flush(timeout_s=30.0)
        finally:
            await pool.close(offline=False)
            stats.published, stats.acked = pool.published, pool.acked
    return stats.finish()


run_load = blocking(play_load)


async def _loop(
    pool: ConnectionPool,
    devices: Sequence[tuple[str, object]],
    prefix: str,
    stats: RunStats,
    rate: float | None,
    count: int | None,
    duration_s: float | None,
    stop: threading.Event | None,
    on_progress: ProgressFn | None,
) -> None:
    run = run_tag(time.time_ns() // 1_000_000) + "l"
    topics = [events_topic(prefix, device_id) for device_id, _ in devices]
    ids = [device_id for device_id, _ in devices]
    n_dev = len(devices)
    fmt = TsFormatter(UTC)
    last_ms, ts = -1, ""
    interval = 1.0 / rate if rate else 0.0
    heartbeats = motions = 0
    i = 0
    t0 = time.perf_counter()
    stats.started = time.monotonic()
    next_report = 0.0
    publish = pool.publish
    while count is None or i < count:
        if i % _CHECK_EVERY == 0:
            now = time.perf_counter() - t0
            if (duration_s is not None and now >= duration_s) or (stop and stop.is_set()):
                break
            if on_progress is not None and now >= next_report:
                stats.by_type.update(heartbeat=heartbeats, motion=motions)
                heartbeats = motions = 0
                stats.acked = pool.acked
                on_progress(stats)
                next_report = now + 0.25
        if interval:
            wait = i * interval - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(min(wait, 0.05))
                continue
        k = i % n_dev
        ms = time.time_ns() // 1_000_000
        if ms != last_ms:
            last_ms, ts = ms, fmt(ms)
        if k % 2 == 0:  # the alarm unit: mains powered
            payload = f'{{"id":"{run}-{i}","ts":"{ts}","type":"heartbeat"}}'
            heartbeats += 1
        elif (i // n_dev) % 2 == 0:
            payload = (f'{{"id":"{run}-{i}","ts":"{ts}","type":"motion",'
                       f'"data":{{"room":"living_room"}}}}')
            motions += 1
        else:
            payload = (f'{{"id":"{run}-{i}","ts":"{ts}","type":"heartbeat",'
                       f'"data":{{"battery_pct":{90 - (i // n_dev) % 50}}}}}')
            heartbeats += 1
        await publish(ids[k], topics[k], payload.encode())
        i += 1
    stats.by_type.update(heartbeat=heartbeats, motion=motions)


__all__ = ["play_load", "run_load"]
