"""ProcessorStage on asyncio with a test-driven clock: sink from a thread, timers, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from processors import Processor, ProcessorStage, StageNotRunningError
from tests.helpers import one_resident
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent, DeviceStatus, IntentAction
from trygg.registry import Registry

T0 = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def registry() -> Registry:
    return one_resident({"id": "d-alarm", "kind": "alarm_unit", "heartbeat_s": 60},
                        {"id": "d-door", "kind": "door_sensor", "heartbeat_s": 3600})


def ev(device: str, kind: str, at: datetime, event_id: str) -> Event:
    return Event(device, event_id, EventType(kind), at, at, {}, resident_id="r-17")


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run (no real sleeping) until `condition` holds."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def flat(batches: list[list[AlertIntent]]) -> list[AlertIntent]:
    return [intent for batch in batches for intent in batch]


def test_stage_raises_intents_from_a_gateway_thread_and_from_timers() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        batches: list[list[AlertIntent]] = []
        stage = ProcessorStage(Processor(registry()), batches.append, clock=clock)
        stage.sink(ev("d-alarm", "heartbeat", T0, "e-0"))  # before run: kept in order
        runner = asyncio.create_task(stage.run(), name="stage")
        await until(lambda: stage.processed == 1)

        press = ev("d-alarm", "alarm.button", T0, "e-1")
        gateway = threading.Thread(target=stage.sink, args=(press,))
        gateway.start()
        gateway.join()
        await until(lambda: len(batches) == 1)
        [intent] = batches[0]
        assert (intent.kind, intent.action, intent.event) == (
            AlertKind.ALARM,
            IntentAction.OPEN,
            press,
        )

        # the alarm unit falls silent: the timer task raises device_offline at T0 + 180 s
        clock.advance(seconds=179)
        stage.wake()
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(batches) == 1
        clock.advance(seconds=1)
        stage.wake()
        await until(lambda: len(batches) == 2)
        [offline] = batches[1]
        assert (offline.kind, offline.device_id) == (AlertKind.DEVICE_OFFLINE, "d-alarm")

        # heard again via its status: cancelled
        stage.sink(DeviceStatus("d-alarm", "r-17", True, clock()))
        await until(lambda: len(batches) == 3)
        assert batches[2][0].action is IntentAction.CANCEL

        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_door_timer_fires_through_the_stage() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        batches: list[list[AlertIntent]] = []
        stage = ProcessorStage(Processor(registry()), batches.append, clock=clock)
        runner = asyncio.create_task(stage.run())
        stage.sink(ev("d-door", "door.opened", T0, "e-1"))  # door_open due at T0 + 15 min
        await until(lambda: stage.processed == 1)
        assert stage.processor.next_deadline() == T0 + timedelta(minutes=15)
        clock.advance(minutes=15)  # time passes; the timer task notices within MAX_SLEEP
        stage.wake()
        await until(lambda: any(i.kind is AlertKind.DOOR_OPEN for i in flat(batches)))
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_queued_events_are_handled_before_due_timers() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        batches: list[list[AlertIntent]] = []
        proc = Processor(registry())
        proc.handle(ev("d-door", "door.opened", T0, "e-1"), T0)
        stage = ProcessorStage(proc, batches.append, clock=clock)
        clock.advance(minutes=20)
        # the door was closed in time, but the message is still queued when the loop starts
        stage.sink(ev("d-door", "door.closed", T0 + timedelta(minutes=5), "e-2"))
        runner = asyncio.create_task(stage.run())
        await until(lambda: stage.processed == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert not any(i.kind is AlertKind.DOOR_OPEN for i in flat(batches))
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_failing_consumer_does_not_stop_the_stage() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        seen: list[AlertIntent] = []

        def flaky(intents: list[AlertIntent]) -> None:
            seen.extend(intents)
            if len(seen) == 1:
                raise RuntimeError("alerts stage hiccup")

        stage = ProcessorStage(Processor(registry()), flaky, clock=clock)
        runner = asyncio.create_task(stage.run())
        stage.sink(ev("d-alarm", "alarm.button", T0, "e-1"))
        stage.sink(ev("d-alarm", "alarm.button", T0, "e-2"))
        await until(lambda: len(seen) == 2)
        assert not runner.done()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_wake_before_run_is_refused() -> None:
    stage = ProcessorStage(Processor(registry()), lambda intents: None)
    with pytest.raises(StageNotRunningError):
        stage.wake()
