"""`ResidentPartition`: the rules and alerts of one resident partition in the cluster
mode (docs/cluster.md), run by the instance that holds the partition's lease.

It runs what `trygg up` runs after the gateway (composition/app.py), for the residents of
its partition only (a registry of them: the processors and the alert stage see no one
else), fed from the stream `TRYGG_RESIDENTS` instead of the gateway:

- **Restore.** The alerts of the partition's residents come from PostgreSQL and from
  `TRYGG_ALERTS` (the last change of each, `alerts_filter(rp)`); the newer version of an
  alert wins, and what the stream has newer than the database is written to it. The
  escalation timers are re-armed from the alerts. The rule state is the partition's
  snapshot (storage/rule_state.py `load_partition_state`) with the stream position it
  reflects; the partition's messages after that position are replayed through the rules
  (read by an ephemeral consumer up to the end of the stream), their intents handed to
  the alert stage, which knows the alerts already raised (deterministic alert ids: a
  re-opened alert is the same alert and is not published again). Without a snapshot
  the replay starts `REPLAY_WITHOUT_SNAPSHOT` back (as `trygg up` without one), or at
  the first message no owner acknowledged if that is older. Heartbeat supervision
  is armed from when each device was last heard, in the replay or in PostgreSQL, and not
  before `RESTART_GRACE` (processors/processor.py): no `device_offline` flood.
- **Consume.** Batches from the durable consumer `rules_consumer(rp)`; a message at or
  before the last one handled (the replay read it) is only acknowledged; every other one
  goes through the processors stage (handled in the call, on this loop) and is then
  acknowledged.
- **Every alert change** goes to MQTT first (the alert stage's publisher, retained, on
  the NATS nodes' MQTT listeners, moving to the next node when one dies), then onto
  `TRYGG_ALERTS` (`_Mirror`: in order per alert, each until the stream acknowledged it,
  retried), then to the database writer.
- **Snapshots** every `SNAPSHOT_INTERVAL_S`: the rule state and the position it reflects,
  saved once the alert changes made so far are on the stream (a state that raised an
  alert is never saved before the alert can be restored).
- **Staff actions** are requests on `command_subject(rp)` (composition/cluster_wire.py),
  answered once the change is on the stream.

Cancelled (the lease moved, or the instance stops), it stops reading, saves a last
snapshot, unsubscribes, and stops the alert stage (MQTT and the database writer
flushed), within a few seconds. Killed without any of that, the next owner restores from
the last snapshot and the streams: nothing is lost, nothing raised twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

import nats.errors
import psycopg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from alerts import AlertConfig, AlertNotFound, AlertStage, IllegalTransition, StageNotReady
from alerts.journal import Item
from cluster.layout import (
    ALERTS_STREAM,
    RESIDENT_PARTITIONS,
    RESIDENTS_STREAM,
    alerts_filter,
    cancel_not_lost,
    command_subject,
    election_backoff,
    fetch_ready,
    resident_partition,
    resident_subject,
    rules_consumer,
)
from composition.app import LateAlertClosed
from composition.cluster_streams import AlertMirror, first_seq, read_to_end
from composition.cluster_wire import Command, alert_item_of, reply_error, reply_ok
from mqtt import BrokerAddress, Protocol
from processors import RESTART_GRACE, Processor, ProcessorStage, StateError, export_states
from storage import Pool
from storage.errors import DatabaseUnavailable
from storage.rule_state import PartitionState, last_seen, load_partition_state, save_partition_state
from trygg.alert import Alert
from trygg.backoff import Backoff
from trygg.contract import Event, utcnow
from trygg.logging import get_logger
from trygg.pipeline import DeviceStatus, item_from_wire
from trygg.registry import Registry
from trygg.settings import Settings

log = get_logger(__name__)

#: the rule state is saved this often (when something changed); a new owner replays the
#: partition's messages after the last save
SNAPSHOT_INTERVAL_S: Final = 10.0
#: without a snapshot, the replay starts this long ago (as `trygg up` without one)
REPLAY_WITHOUT_SNAPSHOT: Final = timedelta(minutes=5)
#: messages taken from a consumer at a time
BATCH: Final = 500
#: how long a fetch waits for messages (seconds); cancellation does not wait for it
FETCH_WAIT_S: Final = 1.0
#: a staff action is answered once its change is on TRYGG_ALERTS, or after this long
COMMAND_MIRROR_WAIT_S: Final = 3.0
#: how long the last snapshot waits for the alert changes to reach the stream (seconds)
STOP_MIRROR_WAIT_S: Final = 2.0
#: unresolved alerts are put on TRYGG_ALERTS again this often (seconds), well within its
#: ALERTS_MAX_AGE_S (cluster/layout.py)
REFRESH_OPEN_S: Final = 6 * 3600.0
#: open alerts nobody has taken are published to the handhelds again this often: a NATS
#: node may acknowledge an alert it then does not deliver while another node's death
#: leaves a stream without a leader (alerts/stage.py `_resend_open`)
RESEND_OPEN_S: Final = 2.0
#: the start-up read of the snapshot tries this long while PostgreSQL does not answer
#: (then the partition starts without it: alarms first)
RESTORE_DB_WAIT_S: Final = 2.0


def partition_registry(registry: Registry, owns: Callable[[str], bool]) -> Registry:
    """The registry of the residents `owns` accepts: every team (escalation crosses
    partitions), those residents, no users."""
    return registry.model_copy(update={"residents": [r for r in registry.residents if owns(r.id)], "users": []})


class ResidentPartition:
    """The owner of one resident partition (see the module doc). `run` until cancelled;
    `set_registry` from the loop's thread."""

    def __init__(self, nc: NATS, partition: int, *, settings: Settings, registry: Registry, pool: Pool,
                 brokers: list[BrokerAddress], instance: str, partitions: int = RESIDENT_PARTITIONS,
                 snapshot_interval_s: float = SNAPSHOT_INTERVAL_S, batch: int = BATCH,
                 grace: timedelta = RESTART_GRACE) -> None:
        """`grace`: no device is declared offline sooner than this after the restore
        (processors/processor.py `start_supervision`)."""
        if not brokers:
            raise ValueError("a resident partition needs the MQTT address of at least one NATS node")
        self.partition = partition
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._settings = settings
        self._registry = registry
        self._pool = pool
        self._brokers = list(brokers)
        self._instance = instance
        self._partitions = partitions
        self._snapshot_interval_s = snapshot_interval_s
        self._batch = batch
        self._grace = grace
        self._mirror = AlertMirror(self._js, partition)
        self._processor: Processor | None = None
        self._stage: ProcessorStage | None = None
        self._alerts: AlertStage | None = None
        #: messages of the partition handled (replayed or consumed)
        self.processed = 0
        #: the stream sequence of the last message handled
        self.last_seq = 0
        #: set once restored and consuming (for tests and health)
        self.ready = asyncio.Event()
        self._abandoned = False

    @property
    def alerts(self) -> AlertStage | None:
        """The partition's alert stage while it runs."""
        return self._alerts

    def owns(self, resident_id: str) -> bool:
        return resident_partition(resident_id, self._partitions) == self.partition

    def abandon(self) -> None:
        """The lease was lost, not given back: another instance may own the partition
        already. The stop that follows saves no snapshot and does not wait for the alert
        changes to reach the stream (the bucket's or a stream's leader may be gone, and
        every second of waiting delays the partition's next start); the next owner
        restores as after a kill."""
        self._abandoned = True

    def set_registry(self, registry: Registry) -> None:
        """A reloaded registry; the partition keeps its own residents of it."""
        self._registry = registry
        if self._alerts is not None and self._stage is not None:
            own = partition_registry(registry, self.owns)
            self._alerts.set_registry(own)
            self._stage.set_registry(own)

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Restore, then consume and answer staff actions until cancelled."""
        registry = partition_registry(self._registry, self.owns)
        log.info("resident_partition_starting", partition=self.partition, residents=len(registry.residents))
        processor = Processor(registry, offline_debounce=timedelta(seconds=self._settings.offline_debounce_s))
        devices = [d.id for r in registry.residents for d in r.devices]
        commands: NatsSubscription | None = None
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                try:
                    # PostgreSQL is read while the streams are: when it is down, the waits overlap
                    loading = group.create_task(self._load_snapshot(), name=f"rules.{self.partition}.snapshot")
                    hearing = group.create_task(
                        _from_database(lambda: last_seen(self._pool, devices), "last_seen", 0.0),  # grace covers
                        name=f"rules.{self.partition}.last_seen")
                    restored = await self._stream_alerts()
                    rules = LateAlertClosed()
                    alerts = AlertStage(registry, self._alert_config(), pool=self._pool, alert_closed=rules,
                                        mirror=self._mirror.put, owns=self.owns, restored=restored,
                                        resend_open_s=RESEND_OPEN_S)
                    stage = ProcessorStage(processor, alerts.on_intents)
                    rules.bind(stage)
                    self._processor, self._stage, self._alerts = processor, stage, alerts
                    tasks["mirror"] = group.create_task(self._mirror.run(), name=f"rules.{self.partition}.mirror")
                    tasks["alerts"] = group.create_task(alerts.run(), name=f"rules.{self.partition}.alerts")
                    await alerts.wait_ready()
                    stored = await hearing
                    await self._restore_rules(processor, alerts, await loading,
                                              stored if isinstance(stored, dict) else {})
                    tasks["processors"] = group.create_task(stage.run(), name=f"rules.{self.partition}.processors")
                    commands = await self._nc.subscribe(command_subject(self.partition), queue="trygg-rules",
                                                        cb=self._command)
                    tasks["snapshots"] = group.create_task(self._snapshots(),
                                                           name=f"rules.{self.partition}.snapshots")
                    self.ready.set()
                    log.info("resident_partition_running", partition=self.partition, last_seq=self.last_seq,
                             active_alerts=len(alerts.active()))
                    await self._consume()
                finally:
                    self.ready.clear()
                    await self._stop(tasks, commands)
        finally:
            self._processor = self._stage = self._alerts = None

    async def _stop(self, tasks: dict[str, asyncio.Task[None]], commands: NatsSubscription | None) -> None:
        """In order: no more reading (the caller's await ended), the snapshot task, the
        rules (what they hold queued is handled), staff actions, a last snapshot once the
        alert changes are on the stream, the alert stage (MQTT and the writer flushed),
        the mirror."""
        await _cancel(tasks.get("snapshots"))
        await _cancel(tasks.get("processors"))
        if commands is not None:
            with contextlib.suppress(Exception):
                await commands.unsubscribe()
        if "processors" in tasks and not self._abandoned:  # restored and running: worth keeping
            await self._save_snapshot(STOP_MIRROR_WAIT_S)
        if self._abandoned and self._alerts is not None:  # lost during the restore too
            self._alerts.abandon()
        await _cancel(tasks.get("alerts"))
        if not self._abandoned:
            await self._mirror.flush(STOP_MIRROR_WAIT_S)
        await _cancel(tasks.get("mirror"))
        log.info("resident_partition_stopped", partition=self.partition, last_seq=self.last_seq,
                 processed=self.processed, unmirrored=self._mirror.backlog)

    def _alert_config(self) -> AlertConfig:
        settings, first = self._settings, self._brokers[0]
        return AlertConfig(
            broker_host=first.host, broker_port=first.port, username=first.username, password=first.password,
            tls=first.tls, failover=tuple(self._brokers[1:]),
            protocol=Protocol.V311,  # what the NATS server's MQTT speaks
            prefix=settings.mqtt_prefix,
            client_id=f"{settings.mqtt_client_id}-{self._instance}-rules-{self.partition}",
            journal_dir=None,  # TRYGG_ALERTS holds what PostgreSQL does not have yet
            escalate_critical_s=settings.escalate_critical_s, escalate_high_s=settings.escalate_high_s,
            escalate_medium_s=settings.escalate_medium_s, retry_s=settings.db_retry_s)

    # ------------------------------------------------------------------ restore

    async def _load_snapshot(self) -> PartitionState | None:
        """The partition's snapshot; None if there is none, or PostgreSQL does not
        answer within `RESTORE_DB_WAIT_S` (then the replay starts a few minutes back)."""
        loaded = await _from_database(lambda: load_partition_state(self._pool, self.partition), "snapshot",
                                      RESTORE_DB_WAIT_S)
        return loaded if isinstance(loaded, PartitionState) else None

    async def _stream_alerts(self) -> list[Item]:
        """The last change of each of the partition's alerts on TRYGG_ALERTS."""
        items: list[Item] = []

        def take(msg: Msg) -> None:
            try:
                items.append(alert_item_of(msg.data))
            except (KeyError, ValueError, TypeError) as exc:
                log.error("alert_change_on_stream_not_readable", subject=msg.subject, error=str(exc))

        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                                filter_subject=alerts_filter(self.partition))
        await read_to_end(self._js, ALERTS_STREAM, config, take, self._batch)
        log.info("alerts_read_from_stream", partition=self.partition, alerts=len(items))
        return items

    async def _restore_rules(self, processor: Processor, alerts: AlertStage, snapshot: PartitionState | None,
                             stored: dict[str, datetime]) -> None:
        """The snapshot, the partition's messages after it (intents to the alert stage,
        which is running), then heartbeat supervision from when each device was last
        heard (`stored`, or in the replay)."""
        config = ConsumerConfig(filter_subject=resident_subject(self.partition))
        if snapshot is not None:
            try:
                processor.restore_state(snapshot.state)
                self.last_seq = snapshot.seq
            except StateError as exc:
                log.warning("partition_state_snapshot_not_usable_rebuilding", partition=self.partition,
                            error=str(exc))
                snapshot = None
        if snapshot is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = snapshot.seq + 1
        else:
            # No state: the last few minutes are context for the rules, and what no owner
            # acknowledged is replayed too (a message an owner took before it died comes
            # back from the durable consumer only after its ack wait).
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = utcnow() - REPLAY_WITHOUT_SNAPSHOT
            info = await self._js.consumer_info(RESIDENTS_STREAM, rules_consumer(self.partition))
            unacknowledged = (info.ack_floor.stream_seq if info.ack_floor is not None else 0) + 1
            window = await first_seq(self._js, RESIDENTS_STREAM, replace(config))
            if window is None or unacknowledged < window:
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_time = None
                config.opt_start_seq = unacknowledged
        heard: dict[str, datetime] = {}
        replayed = 0

        def replay(msg: Msg) -> None:
            nonlocal replayed
            seq = msg.metadata.sequence.stream
            if seq <= self.last_seq:
                return
            self.last_seq = seq
            item = _item(msg)
            if item is None:
                return
            intents = processor.handle(item, item.received_at)
            if intents:
                alerts.on_intents(intents)  # what it knows already changes nothing
            if heard.get(item.device_id, item.received_at) <= item.received_at:
                heard[item.device_id] = item.received_at
            replayed += 1
            self.processed += 1

        await read_to_end(self._js, RESIDENTS_STREAM, config, replay, self._batch)
        seen = dict(stored)
        for device, at in heard.items():
            if seen.get(device, at) <= at:
                seen[device] = at
        processor.start_supervision(utcnow(), seen, grace=self._grace)
        log.info("partition_rules_restored", partition=self.partition, from_snapshot=snapshot is not None,
                 replayed=replayed, last_seq=self.last_seq)

    # ------------------------------------------------------------------ consume

    async def _consume(self) -> None:
        """The durable consumer, until cancelled; a failing fetch (a node died, the
        connection moves) is tried again with backoff, never given up."""
        stage = self._stage
        assert stage is not None
        backoff = election_backoff()
        sub: JetStreamContext.PullSubscription | None = None
        try:
            while True:
                cancel_not_lost()
                try:
                    if sub is None:
                        sub = await self._js.pull_subscribe_bind(rules_consumer(self.partition), RESIDENTS_STREAM)
                    try:
                        msgs = await fetch_ready(sub, self._batch, FETCH_WAIT_S)
                    except TimeoutError:  # nothing new (nats-py's TimeoutError is one too)
                        continue
                    for msg in msgs:
                        seq = msg.metadata.sequence.stream
                        if seq > self.last_seq:
                            item = _item(msg)
                            if item is not None:
                                stage.sink(item)  # handled in this call (we are on the stage's loop)
                            self.last_seq = seq
                            self.processed += 1
                        await msg.ack()
                    backoff.reset()
                except (nats.errors.Error, OSError) as exc:
                    log.warning("partition_fetch_failed", partition=self.partition, error=str(exc) or repr(exc))
                    if sub is not None:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                        sub = None
                    await asyncio.sleep(backoff.next())
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # ------------------------------------------------------------------ snapshots

    async def _snapshots(self) -> None:
        saved_for: tuple[int, int] | None = None
        refreshed = -REFRESH_OPEN_S
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._snapshot_interval_s)
            if loop.time() - refreshed >= REFRESH_OPEN_S:
                self._refresh_open_alerts()
                refreshed = loop.time()
            now = (self.processed, self._mirror.queued)
            if now != saved_for and await self._save_snapshot(self._snapshot_interval_s):
                saved_for = now

    def _refresh_open_alerts(self) -> None:
        """Put every unresolved alert on TRYGG_ALERTS again as it is (soon after the
        partition was taken, then every `REFRESH_OPEN_S`): the stream forgets a record
        after `ALERTS_MAX_AGE_S`, and an alert open that long must not drop out of every
        dashboard that starts later. The dashboards ignore a version they have."""
        alerts = self._alerts
        if alerts is None:
            return
        for alert in alerts.active():
            self._mirror.put((alert, ()))

    async def _save_snapshot(self, mirror_wait_s: float) -> bool:
        """The states and position are taken now, on the loop; saved on a thread once
        every alert change made so far is on the stream. False if not saved."""
        processor = self._processor
        if processor is None:
            return False
        snapshot_of = (self.last_seq, utcnow(), processor.states_view())
        if not await self._mirror.flush(mirror_wait_s):
            log.warning("partition_state_not_saved_alerts_not_on_stream", partition=self.partition,
                        unmirrored=self._mirror.backlog)
            return False
        seq, saved_at, states = snapshot_of

        def save() -> None:
            save_partition_state(self._pool, PartitionState(self.partition, seq, saved_at, export_states(states)))

        try:
            await asyncio.to_thread(save)
        except (psycopg.Error, DatabaseUnavailable) as exc:
            log.warning("partition_state_not_saved", partition=self.partition, error=str(exc).strip())
            return False
        return True

    # ------------------------------------------------------------------ staff actions

    async def _command(self, msg: Msg) -> None:
        """One staff action (composition/cluster_wire.py); answered once the change is
        on the stream, so that every dashboard following it has it."""
        try:
            reply = await self._act(msg.data)
        except Exception as exc:  # a bug must not leave the caller waiting for its timeout
            log.exception("partition_command_failed", partition=self.partition)
            reply = reply_error("not_ready", f"the action failed: {type(exc).__name__}")
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(reply)

    async def _act(self, payload: bytes) -> bytes:
        try:
            command = Command.from_bytes(payload)
        except ValueError as exc:
            return reply_error("bad_request", str(exc))
        alerts = self._alerts
        if alerts is None:
            return reply_error("not_ready", "the partition is not running")
        alert: Alert
        try:
            if command.op == "acknowledge":
                alert = alerts.acknowledge(command.alert_id, command.actor, command.note)
            else:
                alert = alerts.resolve(command.alert_id, command.actor, command.note)
        except AlertNotFound:
            return reply_error("not_found", f"no alert {command.alert_id}")
        except IllegalTransition as exc:
            return reply_error("illegal", str(exc))
        except StageNotReady as exc:
            return reply_error("not_ready", str(exc))
        log.info("staff_action_done", partition=self.partition, op=command.op, alert_id=alert.alert_id)
        if not await self._mirror.flush(COMMAND_MIRROR_WAIT_S):
            log.warning("staff_action_answered_before_on_stream", alert_id=alert.alert_id)
        return reply_ok(alert)


def _item(msg: Msg) -> Event | DeviceStatus | None:
    """The event or status of a TRYGG_RESIDENTS message; None (logged) if it is none."""
    try:
        return item_from_wire(msg.data)
    except (KeyError, ValueError, TypeError) as exc:
        log.error("partition_message_not_readable", subject=msg.subject,
                  seq=msg.metadata.sequence.stream, error=str(exc))
        return None


async def _from_database(read: Callable[[], object], what: str, within_s: float) -> object | None:
    """`read()` on a thread, tried again while PostgreSQL does not answer for `within_s`
    (each try waits for a connection as the pool does); None then."""
    backoff = Backoff(0.2, 2.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await asyncio.to_thread(read)
        except (psycopg.Error, DatabaseUnavailable) as exc:
            if loop.time() > deadline:
                log.warning("partition_restore_without_database", what=what, error=str(exc).strip())
                return None
            await asyncio.sleep(backoff.next())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait until it ended, whatever it ended with."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])


__all__ = ["ResidentPartition", "partition_registry"]
