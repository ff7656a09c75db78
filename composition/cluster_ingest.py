"""The owner of one device partition in the cluster mode (docs/cluster.md).

Devices' QoS 1 messages wait on the NATS cluster, in `$MQTT_msgs`, for the durable
consumer `trygg-ingest-{p}` of their partition. The instance holding the lease
`ingest.{p}` runs one `IngestPartition`: it fetches a batch, validates every message
against the contract and the registry as the single-process gateway does (the same
validator, dead letters with the same reasons, the same handling of re-sent events and
re-used ids: gateway/recent.py), and

1. hands every valid event and status on to its resident's partition, on
   `TRYGG_RESIDENTS` (`trygg.res.{rp}`), all of the batch at once, each with a message
   id that makes a second copy a duplicate the stream drops; the alarm path never waits
   for PostgreSQL, so while PostgreSQL is down alarms still reach the rules;
2. stores the batch's events, dead letters and statuses with `EventStore.write` on a
   thread, exactly once by the store's keys; while PostgreSQL is unavailable the batches
   wait, in order, retried with the project's backoff, and their messages are kept from
   being delivered again (`in_progress`);
3. acknowledges a message only once it is both handed on and committed.

Whatever one message holds is that message's problem: a dead letter, never an end of
the partition. On cancel (the lease moves) a write under way is given a few seconds, what
was committed is acknowledged and the rest handed back (`nak`), so the next owner gets it
at once and in order; it stores nothing twice (the store's keys) and hands nothing on
twice within the stream's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cluster import (
    RESIDENT_PARTITIONS,
    RESIDENTS_STREAM,
    device_from_subject,
    ingest_consumer,
    resident_partition,
    resident_subject,
)
from cluster.layout import (
    ACK_WAIT_S,
    MAX_ACK_PENDING,
    MQTT_STREAM,
    cancel_not_lost,
    election_backoff,
    fetch_ready,
)
from gateway import DeadLetters, RecentKeys, Validator, describe, metrics
from gateway.durable import write_batch
from storage import DatabaseUnavailable, DeadLetter, EventStore, StatusRow
from trygg.backoff import Backoff
from trygg.contract import Event, InvalidMessage, Reason, utcnow
from trygg.logging import get_logger
from trygg.pipeline import DeviceStatus, item_to_wire

log = get_logger(__name__)

#: how long one fetch waits for the first message
FETCH_WAIT_S = 1.0
#: how long the stream has to acknowledge one hand-on before it is tried again (the
#: message id makes a copy that did arrive a duplicate): a request that went to a leader
#: that has just died is not waited for long
PUBLISH_TIMEOUT_S = 2.0
#: on cancel: how long a write under way is waited for before its messages are handed back
STOP_WAIT_S = 3.0
#: messages fetched and not yet acknowledged, at most (the consumer's own limit)
HELD_MAX = MAX_ACK_PENDING
#: a write waits this long for more of the partition's messages before it begins: the
#: device has its PUBACK and the alarm is handed on already, so only the acknowledgement
#: to the stream waits; at 5,000 events/s over 16 partitions, commits that each carried a
#: message or two cost PostgreSQL (and its synchronous standby) more than the rows did
STORE_LINGER_S = 0.1
#: how often the last-heard time of each device is written (as the gateway's writers do)
TOUCH_INTERVAL_S = 5.0
MSG_ID = "Nats-Msg-Id"


@dataclass(slots=True)
class _Chunk:
    """The messages of one fetch and what to store of them; acknowledged together."""

    msgs: list[Msg]
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    #: to the resident partitions: (subject, payload, message id)
    onward: list[tuple[str, bytes, str]] = field(default_factory=list)
    acked: int = 0  # of `msgs`, the first so many


class IngestPartition:
    """Validates, hands on and stores the device messages of partition `partition`
    until cancelled. `stored` (new events committed), `forwarded` (items the resident
    stream acknowledged) and `dead` (messages dead-lettered) count what it did."""

    def __init__(self, js: JetStreamContext, partition: int, *, validator: Validator,
                 dead_letters: DeadLetters, store: EventStore, prefix: str,
                 resident_partitions: int = RESIDENT_PARTITIONS, batch: int = 500) -> None:
        if batch < 1:
            raise ValueError(f"a batch holds at least one message, got {batch}")
        self._js = js
        self._partition = partition
        self._validator = validator
        self._dead_letters = dead_letters
        self._store = store
        self._prefix = prefix
        self._resident_partitions = resident_partitions
        self._batch = batch
        self._recent = RecentKeys()
        self._log = log.bind(partition=partition)
        #: fetched, not yet acknowledged, oldest first (what `in_progress` keeps)
        self._held: deque[_Chunk] = deque()
        self._held_msgs = 0
        self._room = asyncio.Event()
        self._to_store: asyncio.Queue[_Chunk] = asyncio.Queue()  # bounded by HELD_MAX messages
        #: the chunks being stored and acknowledged, the last write of them started on a
        #: thread, and whether they are committed (for `_hand_back`)
        self._storing_now: list[_Chunk] | None = None
        self._write: asyncio.Future[int] | None = None
        #: the one thread that uses the store (a store is used from one thread at a time)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"trygg-ingest-{partition}")
        self._fetch: asyncio.Future[list[Msg]] | None = None  # under way, its messages not yet taken
        self._committed = False
        self._db_ok = True
        self._last_seen: dict[str, datetime] = {}  # of the writer threads, one at a time
        self._touched = time.monotonic()
        self._received = {"events": metrics.RECEIVED.labels("events"),
                          "status": metrics.RECEIVED.labels("status")}
        self.stored = 0
        self.forwarded = 0
        self.dead = 0

    async def run(self) -> None:
        """Fetch, validate, hand on, store and acknowledge until cancelled; then hand
        back what is not done."""
        try:
            sub, ack_wait = await self._subscribe()
        except BaseException:  # cancelled before it began: the store was not used
            self._store.close()
            self._writer.shutdown(wait=False)
            raise
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._fetching(sub), name=f"ingest {self._partition} fetch")
                tasks.create_task(self._storing(), name=f"ingest {self._partition} store")
                tasks.create_task(self._keeping(ack_wait / 3), name=f"ingest {self._partition} in progress")
        finally:
            await self._hand_back(sub)

    async def _subscribe(self) -> tuple[JetStreamContext.PullSubscription, float]:
        """The pull subscription of the partition's durable consumer and its ack wait
        (seconds); tried again while the cluster does not answer."""
        backoff = election_backoff()
        while True:
            cancel_not_lost()
            sub = None
            try:
                sub = await self._js.pull_subscribe_bind(ingest_consumer(self._partition), MQTT_STREAM)
                info = await sub.consumer_info()
                return sub, info.config.ack_wait or ACK_WAIT_S
            except Exception as exc:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                self._log.warning("ingest_consumer_unavailable", error=describe(exc))
                await asyncio.sleep(backoff.next())

    # -- fetch, validate, hand on -----------------------------------------------------

    async def _fetching(self, sub: JetStreamContext.PullSubscription) -> None:
        backoff = election_backoff()
        while True:
            cancel_not_lost()
            room = HELD_MAX - self._held_msgs
            if room <= 0:  # back-pressure: the server keeps the rest
                self._room.clear()
                await self._room.wait()
                continue
            # Shielded: a fetch cancelled part-way would drop messages the server has
            # delivered; on cancel `_hand_back` takes what it got and hands it back.
            self._fetch = fetch = asyncio.ensure_future(fetch_ready(sub, min(self._batch, room), FETCH_WAIT_S))
            try:
                msgs = await asyncio.shield(fetch)
                self._fetch = None
            except TimeoutError:  # nothing new (nats-py's TimeoutError is one too)
                self._fetch = None
                msgs = []
            except Exception as exc:  # a node lost, the client reconnecting
                self._fetch = None
                self._log.warning("ingest_fetch_failed", error=describe(exc))
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            if msgs:
                chunk = _Chunk(msgs)
                self._held.append(chunk)
                self._held_msgs += len(msgs)
                for msg in msgs:
                    self._take(chunk, msg)
                await self._hand_on(chunk)
                self._to_store.put_nowait(chunk)
            if self._dead_letters.next_due() == 0:
                rows = self._dead_letters.summaries(utcnow())
                if rows:
                    self._to_store.put_nowait(_Chunk([], dead=rows))

    def _take(self, chunk: _Chunk, msg: Msg) -> None:
        """Sort one message into the chunk: an event or status to store and hand on, a
        dead letter, or nothing (a position without legal basis, a dead letter held back
        by the limits). Nothing escapes: an unexpected error is an `internal_error`."""
        topic = msg.subject
        received_at = utcnow()
        try:
            received_at = msg.metadata.timestamp  # when the cluster stored it
            device, channel = device_from_subject(msg.subject)
            topic = f"{self._prefix}/devices/{device}/{channel}"
            received = self._received.get(channel)
            if received is not None:  # else the validator says why not
                received.inc()
            self._accept(chunk, msg, topic, received_at)
        except InvalidMessage as exc:
            self._dead_letter(chunk, topic, msg.data, exc.reason.value, exc.detail, received_at)
        except Exception as exc:
            if self._dead_letter(chunk, topic, msg.data, Reason.INTERNAL_ERROR.value, describe(exc), received_at):
                self._log.exception("message_not_handled_dead_lettered", topic=topic)

    def _accept(self, chunk: _Chunk, msg: Msg, topic: str, received_at: datetime) -> None:
        item = self._validator.accept(topic, msg.data, received_at)
        if item is None:
            return
        if isinstance(item, DeviceStatus):
            chunk.statuses.append(StatusRow(item.device_id, item.online, received_at))
            msg_id = f"s/{self._partition}/{msg.metadata.sequence.stream}"
        else:
            fresh = self._recent.admit(item)  # may give a re-used id its re-keyed id
            chunk.events.append(item)
            if not fresh:  # re-sent: stored once by the store's key, not handed on again
                return
            msg_id = f"{item.device_id}/{item.event_id}"
        subject = resident_subject(resident_partition(item.resident_id, self._resident_partitions))
        chunk.onward.append((subject, item_to_wire(item), msg_id))

    def _dead_letter(self, chunk: _Chunk, topic: str, payload: bytes, reason: str, detail: str,
                     received_at: datetime) -> bool:
        """Count one dead letter; False when the limits hold it back for a summary."""
        self.dead += 1
        row = self._dead_letters.record(topic, payload, reason, detail, received_at)
        if row is None:
            return False
        chunk.dead.append(row)
        return True

    async def _hand_on(self, chunk: _Chunk) -> None:
        """Publish the chunk's items to the resident partitions, all at once; what the
        stream did not acknowledge is published again (the message id makes a copy that
        did arrive a duplicate the stream drops) until all of it is in."""
        pending = chunk.onward
        backoff = election_backoff()
        while pending:
            cancel_not_lost()
            results = await asyncio.gather(
                *(self._js.publish(subject, payload, timeout=PUBLISH_TIMEOUT_S, stream=RESIDENTS_STREAM,
                                   headers={MSG_ID: msg_id})
                  for subject, payload, msg_id in pending),
                return_exceptions=True)
            failed = [item for item, result in zip(pending, results, strict=True)
                      if isinstance(result, BaseException)]
            self.forwarded += len(pending) - len(failed)
            if failed:
                error = next(r for r in results if isinstance(r, BaseException))
                self._log.warning("hand_on_failed_retrying", items=len(failed), error=describe(error))
                await asyncio.sleep(backoff.next())
            pending = failed

    # -- store, acknowledge -----------------------------------------------------------

    async def _storing(self) -> None:
        while True:
            cancel_not_lost()
            chunks = [await self._to_store.get()]
            size = _records(chunks[0])
            if size < self._batch:
                await asyncio.sleep(STORE_LINGER_S)
            while size < self._batch and not self._to_store.empty():
                chunks.append(self._to_store.get_nowait())
                size += _records(chunks[-1])
            self._storing_now, self._committed = chunks, False
            if size:
                await self._commit(chunks)
            self._committed = True
            await self._ack(chunks)
            self._storing_now = self._write = None

    async def _commit(self, chunks: list[_Chunk]) -> None:
        """Write the chunks in one transaction; until that succeeds, try again."""
        events = [ev for c in chunks for ev in c.events]
        dead = [d for c in chunks for d in c.dead]
        statuses = [st for c in chunks for st in c.statuses]
        backoff = Backoff(0.2, 5.0)
        loop = asyncio.get_running_loop()
        while True:
            cancel_not_lost()
            self._write = write = loop.run_in_executor(self._writer, self._commit_on_thread, events, dead, statuses)
            try:
                inserted = await asyncio.shield(write)
            except DatabaseUnavailable as exc:
                if self._db_ok:
                    self._log.warning("database_unavailable_holding_messages", error=str(exc))
                self._db_ok = False
                await asyncio.sleep(backoff.next())
                continue
            except Exception:  # not this batch's fault alone: held and tried again
                metrics.WRITER_ERRORS.inc()
                self._log.exception("ingest_write_failed", events=len(events))
                await asyncio.sleep(backoff.next())
                continue
            if not self._db_ok:
                self._log.info("database_available")
                self._db_ok = True
            self.stored += inserted
            return

    def _commit_on_thread(self, events: list[Event], dead: list[DeadLetter], statuses: list[StatusRow]) -> int:
        """On a thread: commit a batch (row by row if PostgreSQL refuses it whole);
        returns how many events were new."""
        inserted = write_batch(self._store, events, dead, statuses)
        for ev in events:
            self._last_seen[ev.device_id] = ev.received_at
        for st in statuses:
            self._last_seen[st.device_id] = st.at
        self._touch_devices()
        return inserted

    def _touch_devices(self) -> None:
        """When devices were last heard, every few seconds (supervision restarts from it);
        a hint, not data: a failure is logged and the batch stays written."""
        now = time.monotonic()
        if not self._last_seen or now - self._touched < TOUCH_INTERVAL_S:
            return
        seen, self._last_seen = self._last_seen, {}
        self._touched = now
        try:
            self._store.touch_devices(seen)
        except Exception as exc:
            self._log.warning("last_heard_times_not_written", error=describe(exc))

    async def _ack(self, chunks: list[_Chunk]) -> None:
        for chunk in chunks:
            while chunk.acked < len(chunk.msgs):
                try:
                    await chunk.msgs[chunk.acked].ack()
                except Exception as exc:  # stored already: sent again, stored once
                    self._log.warning("acknowledgement_failed", error=describe(exc))
                    break
                chunk.acked += 1
            if chunk.msgs and chunk in self._held:
                self._held.remove(chunk)
                self._held_msgs -= len(chunk.msgs)
                self._room.set()

    async def _keeping(self, every_s: float) -> None:
        """Tell the server the messages held are being worked on, so that it does not
        deliver them again while PostgreSQL is away."""
        while True:
            await asyncio.sleep(every_s)
            for chunk in list(self._held):
                for msg in chunk.msgs[chunk.acked:]:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    # -- cancel -----------------------------------------------------------------------

    async def _hand_back(self, sub: JetStreamContext.PullSubscription) -> None:
        """Let go of the partition: acknowledge what a write under way commits within
        `STOP_WAIT_S`; once no fetch of ours is waiting on the server, hand back (`nak`,
        in stream order) every message delivered to us and not acknowledged, so that the
        next owner gets it at once and in order rather than after the ack wait; write the
        summaries of held-back dead letters, close the store (on the writer thread, after
        what it is doing) and unsubscribe."""
        chunks, write, fetch = self._storing_now, self._write, self._fetch
        waits = {f for f in (write, fetch) if f is not None}
        if waits:
            await asyncio.wait(waits, timeout=STOP_WAIT_S)
        if chunks is not None and not self._committed and write is not None and _succeeded(write):
            self.stored += write.result()
            self._committed = True
        if chunks is not None and self._committed:
            await self._ack(chunks)
        back = [msg for chunk in self._held for msg in chunk.msgs[chunk.acked:]]
        if fetch is not None and _succeeded(fetch):
            back += fetch.result()
        back += await _delivered_late(sub)
        for msg in sorted(back, key=lambda m: m.metadata.sequence.stream):
            with contextlib.suppress(Exception):
                await msg.nak()
        self._held.clear()
        self._held_msgs = 0
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        rows = self._dead_letters.summaries(utcnow(), every=True)
        last = self._writer.submit(self._last_on_thread, rows)
        self._writer.shutdown(wait=False)
        if write is None or write.done():  # else the thread is still busy: not waited for
            await asyncio.wait({asyncio.wrap_future(last)}, timeout=STOP_WAIT_S)

    def _last_on_thread(self, rows: list[DeadLetter]) -> None:
        try:
            if rows:
                self._store.write([], rows)
        except Exception as exc:
            self._log.warning("dead_letter_summaries_not_written", rows=len(rows), error=describe(exc))
        finally:
            self._store.close()


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


async def _delivered_late(sub: JetStreamContext.PullSubscription) -> list[Msg]:
    """Messages the server delivered to this subscription that no fetch took (an
    answer to a pull request that came after its fetch ended): first until the server
    holds no pull request of ours (they expire within `FETCH_WAIT_S`), then what waits
    in the subscription's queue (nats-py has no public way to it)."""
    with contextlib.suppress(Exception):
        for _ in range(round((FETCH_WAIT_S + 0.5) / 0.05)):
            if not (await sub.consumer_info()).num_waiting:
                break
            await asyncio.sleep(0.05)
    queue: asyncio.Queue[Msg] = sub._sub._pending_queue
    late = []
    while not queue.empty():
        msg = queue.get_nowait()
        if msg.reply and not JetStreamContext.is_status_msg(msg):
            late.append(msg)
    return late


def _records(chunk: _Chunk) -> int:
    return len(chunk.events) + len(chunk.dead) + len(chunk.statuses)


__all__ = ["IngestPartition"]
