"""`ProcessorStage`: the asyncio runner around a `Processor`.

- `sink` is the gateway's `trygg.pipeline.EventSink`. It never blocks. Called on the
  stage's own loop (the gateway receives there in `trygg up`) it handles the item in
  the same call; from another thread it hands the item over with
  ``loop.call_soon_threadsafe``; items that arrive before `run` starts are kept in order.
- An item that arrives while nothing is queued is handled in the callback that brings it
  to the loop, so an alarm costs one wake-up of the loop, not two (`_arrive`). Otherwise
  one task (``processors.events``) takes items from the queue in order, runs them through
  the processor and passes each non-empty list of intents to ``on_intents`` at once (the
  alarm path does not wait for a batch).
- One task (``processors.timers``) sleeps until the processor's next deadline, woken
  early when a nearer deadline appears or when `wake` is called, then first processes
  what is already queued (so a ``door.closed`` waiting in the queue is seen before the
  door's timer fires) and fires the due timers. It never sleeps longer than `MAX_SLEEP`,
  so a jump of the wall clock delays a timer by at most that much.

The queue is not bounded: the sink must never block the gateway and must never lose an
alarm, and the rules take microseconds per item, so a backlog means a stalled loop.
`backlog` exposes the queue length for metrics; a warning is logged when it passes
`BACKLOG_WARNING`.

All methods except `sink` and `wake` must be called on the loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Final

from processors import metrics
from processors.errors import StageNotRunningError
from processors.processor import Processor
from processors.scheduler import to_micros
from trygg.contract import AlertKind, Event, utcnow
from trygg.logging import get_logger
from trygg.pipeline import AlertIntent, DeviceStatus
from trygg.registry import Registry

#: the timer task re-checks the wall clock at least this often (seconds)
MAX_SLEEP: Final = 1.0
#: items the event task handles before it lets other tasks run
BATCH: Final = 512
BACKLOG_WARNING: Final = 100_000

log = get_logger(__name__)

_observe_handle = metrics.HANDLE_SECONDS.observe
_handled_event = metrics.HANDLED.labels("event").inc
_handled_status = metrics.HANDLED.labels("status").inc

Item = Event | DeviceStatus


class ProcessorStage:
    """Feeds a `Processor` from the gateway and its timers; see the module doc."""

    def __init__(
        self,
        processor: Processor,
        on_intents: Callable[[list[AlertIntent]], None],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._processor = processor
        self._on_intents = on_intents
        self._clock = clock
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._early: list[Item] = []
        self._wakeup: asyncio.Event | None = None
        self._sleeping_until_us: int | None = None  # the timer task's deadline
        self._warned_backlog = False
        self.processed = 0  # items handled, for metrics

    @property
    def processor(self) -> Processor:
        return self._processor

    @property
    def backlog(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize() + len(self._early)

    # ---------------------------------------------------------------- any thread

    def sink(self, item: Item) -> None:
        """Hand an event or status to the stage; safe from any thread, never blocks."""
        loop = self._loop
        if loop is None:
            with self._lock:
                loop = self._loop
                if loop is None:
                    self._early.append(item)
                    return
        if threading.get_ident() == self._loop_thread:
            self._arrive(item)
        else:
            loop.call_soon_threadsafe(self._arrive, item)

    def wake(self) -> None:
        """Make the timer task look at the clock now (e.g. after the clock moved)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            raise StageNotRunningError("the processor stage is not running")
        loop.call_soon_threadsafe(wakeup.set)

    # ---------------------------------------------------------------- loop thread

    async def run(self) -> None:
        """Run until cancelled; on the way out, handle what is still queued."""
        self._wakeup = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            early, self._early = self._early, []
        for item in early:
            self._queue.put_nowait(item)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._events(), name="processors.events")
                group.create_task(self._timers(), name="processors.timers")
        finally:
            with self._lock:
                self._loop = None
                self._loop_thread = 0
            self._drain()
            log.info("processor_stage_stopped", processed=self.processed)

    def set_registry(self, registry: Registry) -> None:
        """Swap in a reloaded registry; cancels alerts of removed devices."""
        self._emit(self._processor.set_registry(registry, self._clock()))
        self._reschedule()

    def alert_closed(self, resident_id: str, kind: AlertKind | str, device_id: str | None = None) -> None:
        """Tell the rules that staff resolved an alert (`Processor.alert_closed`): the
        stage is the alert stage's `trygg.pipeline.AlertClosed` port."""
        self._processor.alert_closed(resident_id, kind, device_id)

    async def _events(self) -> None:
        while True:
            item = await self._queue.get()
            self._handle(item)
            for _ in range(BATCH - 1):
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                self._handle(item)
            self._check_backlog()
            self._reschedule()

    async def _timers(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            deadline = self._processor.next_deadline()
            self._sleeping_until_us = None if deadline is None else to_micros(deadline)
            wakeup.clear()
            delay = MAX_SLEEP
            if deadline is not None:
                delay = min(MAX_SLEEP, (deadline - self._clock()).total_seconds())
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await wakeup.wait()
                except TimeoutError:
                    pass
            while True:  # in slices, so a flood of due timers never holds up an alarm
                self._drain()
                now = self._clock()
                try:
                    intents = self._processor.due(now, most=BATCH)
                except Exception:
                    metrics.RULE_ERRORS.inc()
                    log.exception("processor_timer_failed")
                    intents = []
                self._emit(intents)
                await asyncio.sleep(0)
                deadline = self._processor.next_deadline()
                if deadline is None or deadline > self._clock():
                    break

    def _handle(self, item: Item) -> None:
        """One item through the rules. Runs for every message of every device, on the
        loop that also carries the alarms: its own bookkeeping is kept to a minimum
        (metric children bound once, one item in `HANDLE_SAMPLE` timed)."""
        self.processed += 1
        timed = not self.processed % metrics.HANDLE_SAMPLE
        started = time.perf_counter() if timed else 0.0
        try:
            intents = self._processor.handle(item, self._clock())
        except Exception:  # a rule bug must not stop supervision of everyone else
            metrics.RULE_ERRORS.inc()
            log.exception("processor_rule_failed", device_id=item.device_id)
            return
        if timed:
            _observe_handle(time.perf_counter() - started)
        (_handled_event if type(item) is Event else _handled_status)()
        if intents:
            self._emit(intents)

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._handle(item)

    def _emit(self, intents: list[AlertIntent]) -> None:
        if not intents:
            return
        for intent in intents:
            metrics.INTENTS.labels(intent.kind.value, intent.action.value).inc()
        try:
            self._on_intents(intents)
        except Exception:
            log.exception("processor_on_intents_failed", count=len(intents))

    def _arrive(self, item: Item) -> None:
        """On the loop: handle at once when nothing is waiting before it, else queue it."""
        if self._queue.empty():
            self._handle(item)
            self._reschedule()
        else:
            self._queue.put_nowait(item)

    def _reschedule(self) -> None:
        """Wake the timer task if a deadline nearer than the one it sleeps for appeared
        (compared in microseconds: this runs after every item)."""
        wakeup = self._wakeup
        if wakeup is None:
            return
        nearest = self._processor.next_deadline_micros()
        if nearest is not None and (self._sleeping_until_us is None or nearest < self._sleeping_until_us):
            self._sleeping_until_us = nearest
            wakeup.set()

    def _check_backlog(self) -> None:
        size = self._queue.qsize()
        metrics.BACKLOG.set(size)
        metrics.TIMERS_ARMED.set(self._processor.timer_count)
        if size > BACKLOG_WARNING and not self._warned_backlog:
            self._warned_backlog = True
            log.warning("processor_backlog", backlog=size)
        elif size < BACKLOG_WARNING // 2:
            self._warned_backlog = False
