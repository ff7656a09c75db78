"""MQTT ingress: subscribe, parse, validate against the contract, hand on, make durable.

The subscriber (mqtt/connection.py) receives on an asyncio loop: `trygg up`'s own, so a
valid event is handed to the processors in the same callback that read it, before the
commit; alone (`trygg gateway`, tests) on a `mqtt.LoopThread`. A message is acknowledged
(PUBACK) by the durability loop only after it is committed to PostgreSQL or fsync'ed to
the spool. Alarms, falls and smoke go to the rules before the background traffic around
them: first within a read, and a large read is handled in slices of at most `SLICE_S`,
the loop reading the socket between them, so an alarm that arrived meanwhile is handed
on by the callback that read it (whatever else that read holds waits behind the earlier
read, in order). The session is persistent (MQTT 5 session expiry, or clean session
false on 3.1.1) under a stable client id, so events published while Trygg is down wait
in the broker. While a durable writer's queue is full the subscriber stops reading
(back-pressure); the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway import metrics
from gateway.alarm_watch import STALL_S, URGENT, AlarmWatch, Watchman
from gateway.config import GatewayConfig
from gateway.dead_letters import DeadLetters, describe
from gateway.durable import DurableWriter, Pending
from gateway.recent import RecentKeys
from gateway.spool import Record, Spool
from gateway.validate import Validator
from mqtt import BrokerAddress, LoopThread, Message, Subscriber
from storage import DeadLetter, EventStore, Pool, StatusRow
from trygg.contract import Event, InvalidMessage, Reason, utcnow
from trygg.logging import get_logger
from trygg.pipeline import NO_EMERGENCIES, DeviceStatus, EmergencyState, EventSink, discard
from trygg.registry import Registry
from trygg.watchdog import watch_task

log = get_logger(__name__)

#: a read is handled in slices of at most this long; the loop reads the socket between them
SLICE_S = 0.001
#: messages handled between two looks at the clock
SLICE_CHECK = 8
#: how long `start` and `stop` wait for the loop (beyond the connect timeout)
LOOP_TIMEOUT_S = 30.0


@dataclass(slots=True)
class _Read:
    """Messages of one read of the socket; `done` of them handled so far."""

    messages: list[Message]
    generation: int
    received_at: datetime
    early: dict[int, Record | None]  # by position: the alarm lane's, handled already
    done: int = 0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Gateway:
    """One MQTT ingress. `start()` connects and runs; `stop()` drains and disconnects
    (both from a thread other than the loop's). Receives on `loop` when given (`trygg
    up`), else on a loop thread of its own."""

    def __init__(
        self,
        broker: BrokerAddress,
        pool: Pool,
        registry: Registry,
        config: GatewayConfig,
        *,
        sink: EventSink = discard,
        emergencies: EmergencyState = NO_EMERGENCIES,
        clock: Callable[[], datetime] = utcnow,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._broker = broker
        self._config = config
        self._prefix = prefix = config.prefix
        self._sink = sink
        self._validator = Validator(registry, prefix, emergencies)
        self._clock = clock
        self._loop = loop
        self._loop_thread: LoopThread | None = None
        # re-sent copies and re-used ids among recent events (gateway/recent.py)
        self._recent = RecentKeys()
        #: reads not yet wholly handled, oldest first (the first may be part-way)
        self._backlog: deque[_Read] = deque()
        self._busy = False  # the rest of a read waits for a later turn of the loop
        self._idle: asyncio.Event | None = None  # set when the backlog is empty (on the loop)
        # Dead letters within the limits are stored whole, the rest summarised per source
        # (gateway/dead_letters.py); the timer writes the summaries that are due.
        self._dead_letters = DeadLetters(prefix, config.dead_letter_limits)
        self._summary_timer: asyncio.TimerHandle | None = None
        # One durability loop per shard of devices: each has its own connection and
        # spool, so a device's events stay in order while shards commit in parallel.
        writers, spool_dir = config.writers, config.spool_dir
        shard_dirs = [spool_dir / f"shard-{i}" for i in range(writers)]
        orphans = [Spool(d) for d in sorted(spool_dir.glob("shard-*")) if d not in shard_dirs]
        self.writers = [
            DurableWriter(
                EventStore(pool), Spool(shard_dir), self._ack,
                batch_max=config.batch_max, batch_wait_s=config.batch_wait_s,
                queue_max=max(config.queue_max // writers, 100), retry_s=config.retry_s,
                orphans=orphans if i == 0 else (), on_room=self._room,
            )
            for i, shard_dir in enumerate(shard_dirs)
        ]
        self._received_events = metrics.RECEIVED.labels("events")
        self._received_status = metrics.RECEIVED.labels("status")
        self._subscriber = Subscriber(
            broker, config.client_id, [f"{prefix}/devices/+/events", f"{prefix}/devices/+/status"],
            self._on_messages, protocol=config.protocol, receive_maximum=config.receive_maximum,
            on_state=self._on_state,
        )

        # While acknowledgements are stalled, alarms come through a second connection
        # (gateway/alarm_watch.py); the task runs on the subscriber's loop from `start`.
        self._paused = False
        #: QoS 1 messages handed to the writers and not yet acknowledged (loop thread);
        #: past half the in-flight window the watch opens, well before the broker stops
        #: sending (gateway/alarm_watch.py). Half, not less: at 10,000 events/s two
        #: writers' batches in flight alone come to a few thousand.
        self._unacked = 0
        self._watch_at = max(config.receive_maximum // 2, 1)
        self.watchman = Watchman(self._stalled, self._open_watch)
        self._watchman_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> threading.Event:
        return self._subscriber.subscribed

    # -- registry ---------------------------------------------------------------------

    def set_registry(self, registry: Registry) -> None:
        """Swap in a reloaded registry (one assignment: safe against the MQTT thread)."""
        self._validator.set_registry(registry)

    # -- life cycle -------------------------------------------------------------------

    @property
    def database_ok(self) -> bool:
        return all(w.database_ok for w in self.writers)

    def start(self) -> None:
        """Connect and subscribe (raises mqtt.BrokerUnavailable), then receive until `stop`."""
        for writer in self.writers:
            writer.start()
        loop = self._loop
        if loop is None:
            self._loop_thread = LoopThread("trygg-gateway").start()
            loop = self._loop_thread.loop
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(LOOP_TIMEOUT_S)
        except BaseException:
            for writer in self.writers:
                writer.stop()
            if self._loop_thread is not None:
                self._loop_thread.stop()
                self._loop_thread = None
            raise
        log.info("connected_to_broker", broker=str(self._broker))

    def stop(self) -> None:
        """Make what was received durable and acknowledge it, then disconnect."""
        loop = self._subscriber.loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(LOOP_TIMEOUT_S)
        for writer in self.writers:
            writer.stop()
        if self._loop_thread is not None:
            self._loop_thread.stop()
            self._loop_thread = None

    async def _open(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        await self._subscriber.__aenter__()
        self._watchman_task = asyncio.get_running_loop().create_task(self._run_watchman(), name="alarm watchman")

    async def _close(self) -> None:
        """On the loop: the reads still waiting, the due summaries, the writers idle
        (acknowledgements go out meanwhile), then the watch and the subscriber."""
        if self._idle is not None:
            await self._idle.wait()
        self._write_summaries(every=True)
        for writer in self.writers:
            await asyncio.to_thread(writer.idle.wait, 10)
        task, self._watchman_task = self._watchman_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._subscriber.__aexit__(None, None, None)

    # -- receiving loop ---------------------------------------------------------------

    def _on_state(self, up: bool, why: str) -> None:
        metrics.BROKER_UP.set(1 if up else 0)
        if up:
            self._unacked = 0  # a new session: what is unacknowledged is sent again
        else:
            log.warning("broker_connection_lost", broker=str(self._broker), error=why)

    def _ack(self, mids: list[int], generation: int) -> None:  # a writer's thread
        self._subscriber.ack(mids, generation)
        if mids:
            acked = len(mids)
            self._subscriber.call(lambda: self._acked(acked, generation))

    def _acked(self, count: int, generation: int) -> None:
        # Only acknowledgements of this connection count: those of an earlier one are not
        # sent (the broker re-sends those messages), and the count was reset at connect.
        if generation == self._subscriber.generation:
            self._unacked = max(0, self._unacked - count)

    def _on_messages(self, messages: list[Message], generation: int) -> None:
        received_at = self._clock()
        # The alarm lane: alarms, falls and smoke in this read reach the rules before the
        # rest of it and before the rest of an earlier read still being handled (each
        # device's events keep their order within either lane; storage keeps the order
        # received).
        behind = self._busy
        early = {i: self._record(msg, received_at) for i, msg in enumerate(messages)
                 if URGENT.search(msg.payload)} if len(messages) > 1 or behind else {}
        self._backlog.append(_Read(messages, generation, received_at, early))
        if not behind:
            self._work()

    def _work(self) -> None:
        """Handle the reads waiting, oldest first. On a loop a read is handled a slice
        (`SLICE_S`) at a time and the rest in a later turn of the loop: between slices
        the loop reads the socket (its `data_received` hands the urgent lane of what it
        read on at once) and runs acknowledgements, timers and the dashboard."""
        loop = _running_loop()
        backlog = self._backlog
        deadline = time.perf_counter() + SLICE_S if loop is not None else float("inf")
        while backlog:
            read = backlog[0]
            if not self._queue_read(read, deadline):
                assert loop is not None
                self._busy = True
                if self._idle is not None:
                    self._idle.clear()
                loop.call_soon(self._work)
                return
            backlog.popleft()
        self._busy = False
        if self._idle is not None:
            self._idle.set()

    def _queue_read(self, read: _Read, deadline: float) -> bool:
        """Validate and hand on what `read.early` did not, then queue it to be made
        durable, until `deadline`; True once the whole read is done."""
        messages, early, received_at = read.messages, read.early, read.received_at
        shards = len(self.writers)
        chunks = [Pending([], [], read.generation) for _ in range(shards)]
        status = 0
        start = i = read.done
        end = len(messages)
        while i < end:
            msg = messages[i]
            record = early[i] if i in early else self._record(msg, received_at)
            if record is None:  # a position without legal basis, or a dead letter held back
                chunk = chunks[0]  # acknowledged once what came before it is durable
            elif isinstance(record, DeadLetter):
                chunk = chunks[0]
                chunk.records.append(record)
            else:
                chunk = chunks[zlib.crc32(record.device_id.encode()) % shards]
                chunk.records.append(record)
                status += isinstance(record, StatusRow)
            if msg.qos:
                chunk.mids.append(msg.mid)
            i += 1
            if (i - start) % SLICE_CHECK == 0 and time.perf_counter() >= deadline:
                break
        read.done = i
        self._received_status.inc(status)
        self._received_events.inc(i - start - status)
        full = False
        for writer, chunk in zip(self.writers, chunks, strict=True):
            if chunk.records or chunk.mids:
                full |= writer.put(chunk)
                self._unacked += len(chunk.mids)
        if self._unacked >= self._watch_at:
            self.watchman.poke()
        if full:
            metrics.BACKPRESSURE.inc()
            self._paused = True
            self._subscriber.pause_reading()
        self._arm_summaries()
        return i == end

    def _arm_summaries(self) -> None:
        """Have the summaries of held-back dead letters written when the first is due."""
        if self._summary_timer is not None:
            return
        delay = self._dead_letters.next_due()
        if delay is None:
            return
        loop = _running_loop()
        if loop is not None:
            self._summary_timer = loop.call_later(delay, self._write_summaries)
        elif delay <= 0:  # no loop (a gateway driven by hand): at the read after they are due
            self._write_summaries()

    def _write_summaries(self, every: bool = False) -> None:
        """Queue the due summaries (all of them when stopping) with the first writer."""
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        rows = self._dead_letters.summaries(self._clock(), every=every)
        if rows and self.writers[0].put(Pending(list(rows), [], self._subscriber.generation)):
            metrics.BACKPRESSURE.inc()
            self._paused = True
            self._subscriber.pause_reading()
        if not every:
            self._arm_summaries()

    def _room(self) -> None:  # a writer's thread
        self._subscriber.call(self._resume)

    def _resume(self) -> None:
        if not any(w.full for w in self.writers):
            self._paused = False
            self._subscriber.resume_reading()

    # -- the alarm watch (gateway/alarm_watch.py) ---------------------------------------

    async def _run_watchman(self) -> None:
        watch_task(asyncio.current_task(), lambda: False)  # type: ignore[arg-type]
        await self.watchman.run()

    def _stalled(self) -> bool:
        """Reading paused for back-pressure, half the in-flight window waiting for
        acknowledgement, or the oldest unacknowledged message older than `STALL_S`."""
        return (self._paused or self._unacked >= self._watch_at
                or any(w.oldest_pending_age() > STALL_S for w in self.writers))

    def _open_watch(self) -> AlarmWatch:
        watch = self._broker.account("watch")  # a session of its own: trygg-gateway-watch
        return AlarmWatch(watch, watch.client_id(f"{self._config.client_id}-watch"),
                          f"{self._prefix}/devices/+/events", self._watched, protocol=self._config.protocol)

    def _watched(self, msg: Message) -> None:
        """An urgent message read by the watch: to the rules if valid and new; nothing
        is stored from here (the session's copy is, once durability returns)."""
        try:
            item = self._accept(msg.topic, msg.payload, self._clock())
        except InvalidMessage:
            return  # the session's copy is dead-lettered
        except Exception:
            log.exception("alarm_watch_could_not_handle_message")
            return
        if item is not None:
            metrics.ALARM_WATCH_HANDED_ON.inc()

    def _record(self, msg: Message, received_at: datetime) -> Record | None:
        """What to store for one message; hands it on. A dead letter when invalid, None
        when that dead letter is held back by the limits (it is summarised). Whatever a
        message holds, nothing escapes from here: an unexpected error is that message's
        dead letter (`internal_error`), acknowledged with the rest."""
        try:
            return self._accept(msg.topic, msg.payload, received_at)
        except InvalidMessage as exc:
            return self._dead_letters.record(msg.topic, msg.payload, exc.reason.value, exc.detail, received_at)
        except Exception as exc:
            dead = self._dead_letters.record(msg.topic, msg.payload, Reason.INTERNAL_ERROR.value, describe(exc),
                                             received_at)
            if dead is not None:  # logged as often as stored: a flood must not flood the log
                log.exception("message_not_handled_dead_lettered", topic=dead.topic)
            return dead

    def _accept(self, topic: str | bytes, payload: bytes, received_at: datetime) -> Event | StatusRow | None:
        item = self._validator.accept(topic, payload, received_at)
        if item is None:
            return None
        if isinstance(item, DeviceStatus):
            self._hand_on(item)
            return StatusRow(item.device_id, item.online, received_at)
        if self._recent.admit(item):  # else re-sent: stored once by the store's key, not handed on again
            self._hand_on(item)
        return item

    def _hand_on(self, item: Event | DeviceStatus) -> None:
        try:
            self._sink(item)
        except Exception:
            # That message's problem only: the event is still made durable and the rules
            # see it again after a restart.
            metrics.HANDOFF_ERRORS.inc()
            log.exception("processor_hand_off_failed", device_id=item.device_id)
