"""`AlertStage`: the asyncio runner of the alerts stage (docs/contract.md#2-layout-and-data-flow, #4-rules-and-alerts,
#5-delivery-guarantees).

It owns an `AlertService` (the state), an `AlertPublisher` (MQTT), an `AlertHub`
(in-process subscribers: the dashboard's SSE), a `WebhookSender`, and an `AlertWriter`
(PostgreSQL in the background, with a local journal). Everything but `run` is called on
the event loop's thread:

- `on_intents(intents)` — from the processors stage. Each change is published over MQTT
  first, then offered to subscribers, webhooks and the writer; nothing on this path
  waits for the database or a consumer. (Called from another thread, it hands the
  intents to the loop; before `run` is ready it keeps them in order.)
- `acknowledge` / `resolve` — staff actions from the dashboard; they return the alert
  after the change or raise `AlertNotFound` / `IllegalTransition`. A resolve calls the
  `alert_closed` port (trygg.pipeline.AlertClosed) so the rules can re-arm.
- `subscribe` / `unsubscribe`, `get`, `active` — for the dashboard.

`run()` restores the unresolved alerts (the journal, then PostgreSQL, with a short
connect timeout; if PostgreSQL is down the journal's alerts are used and the database is
merged in when it answers), handles the intents that arrived meanwhile, and then runs
one `asyncio.TaskGroup` (the escalation timer, the webhook workers, and a late restore
if needed) until cancelled; on the way out it flushes MQTT and the writer.

In the cluster mode one stage serves one resident partition (composition/cluster_rules.py):
it restores only the alerts of residents it `owns`, takes part of its restore from
`restored` changes (the partition's alert stream; what is newer there than in PostgreSQL
is written to it), and hands every change to `mirror` as it hands it to the writer. Without
them (`trygg up`) nothing differs.

After every (re)connection to the broker the unresolved alerts are published again as
they are (retained), because a broker that restarted may have lost its retained
messages: a handheld must never miss an open alert. A handheld may therefore receive the
same state of an alert twice; the wire state is idempotent by `alert_id`. (In-process
subscribers and webhooks get changes only, not these repeats.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from alerts import metrics
from alerts.config import AlertConfig
from alerts.errors import StageNotReady
from alerts.fanout import AlertHub, Subscription
from alerts.journal import Item, Journal
from alerts.model import Change, ChangeReason
from alerts.persistence import AlertWriter, item_of
from alerts.publisher import AlertPublisher
from alerts.service import AlertService
from alerts.webhooks import WebhookSender
from mqtt import Protocol
from storage.alerts_store import AlertStore, newest
from storage.errors import DatabaseUnavailable
from storage.pool import Pool
from trygg.alert import Alert
from trygg.contract import AlertState, utcnow
from trygg.logging import get_logger
from trygg.pipeline import AlertClosed, AlertIntent
from trygg.registry import Registry

if TYPE_CHECKING:
    from mqtt import BrokerAddress
    from trygg.settings import Settings

log = get_logger(__name__)

#: the timer task looks at the clock at least this often (seconds)
MAX_SLEEP: Final = 1.0
#: closed alerts loaded at start-up, to recognise re-processed events and late actions
CLOSED_MEMORY: Final = timedelta(days=1)
#: how long after its last change an open alert is still sent again (`resend_open_s`)
RESEND_WITHIN: Final = timedelta(seconds=30)
#: how long a republish after a reconnect waits for the messages resent to be acknowledged (seconds)
REPUBLISH_DRAIN_S: Final = 2.0
#: connect timeout of the start-up load: the alert path must not wait long for PostgreSQL
RESTORE_CONNECT_TIMEOUT_S: Final = 2


class AlertStage:
    def __init__(
        self,
        registry: Registry,
        config: AlertConfig | None = None,
        *,
        pool: Pool | None = None,
        clock: Callable[[], datetime] = utcnow,
        alert_closed: AlertClosed | None = None,
        webhooks: WebhookSender | None = None,
        mirror: Callable[[Item], None] | None = None,
        owns: Callable[[str], bool] | None = None,
        restored: Sequence[Item] = (),
        resend_open_s: float | None = None,
    ) -> None:
        """`mirror`, `owns`, `restored` and `resend_open_s` serve one partition of a
        cluster (composition/cluster_rules.py): `mirror` is given every change as it is
        given to the writer; only alerts of residents it `owns` are restored from
        storage; the `restored` changes (kept elsewhere) take part in the restore, and
        those newer than the database's copy are written to it; every `resend_open_s`
        the alerts nobody has taken yet are published again (see `_resend_open`)."""
        config = config or AlertConfig()
        self._resend_open_s = resend_open_s
        self._mirror = mirror
        self._owns = owns
        self._restored = list(restored)
        self._clock = clock
        self._pool = pool
        self._retry_s = config.retry_s
        self._alert_closed = alert_closed
        self._service = AlertService(registry, config.timeouts)
        self._publisher = AlertPublisher(
            config.broker_host, config.broker_port, prefix=config.prefix, client_id=config.client_id,
            protocol=config.protocol, username=config.username, password=config.password,
            on_connect=self._broker_connected, tls=config.tls, failover=config.failover,
        )
        self._hub = AlertHub(config.subscriber_limit)
        self._webhooks = webhooks or WebhookSender()
        journal_dir = config.journal_dir
        self._journal = Journal(journal_dir) if journal_dir is not None and pool is not None else None
        self._writer: AlertWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._ready = False
        self._ready_event = asyncio.Event()
        self._early: list[tuple[list[AlertIntent], float]] = []
        self._early_lock = threading.Lock()
        self._loop_thread = 0
        self._republished_for = 0  # publisher connection last republished for
        #: alert id → (broker connection, alert version) it was last published in
        self._sent_on: dict[str, tuple[int, int]] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: how long the stop waits for the broker to acknowledge what was published
        self._flush_s = 2.0
        self._restore_pending = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        registry: Registry,
        broker: BrokerAddress,
        *,
        protocol: Protocol | None = None,
        pool: Pool | None = None,
        alert_closed: AlertClosed | None = None,
    ) -> AlertStage:
        config = AlertConfig.from_settings(settings, broker, protocol=protocol)
        return cls(registry, config, pool=pool, alert_closed=alert_closed)

    # ------------------------------------------------------------------ properties

    @property
    def publisher(self) -> AlertPublisher:
        return self._publisher

    @property
    def writer(self) -> AlertWriter | None:
        return self._writer

    async def wait_ready(self) -> None:
        """Until restored and handling intents."""
        await self._ready_event.wait()

    # ------------------------------------------------------------------ loop thread API

    def on_intents(self, intents: Sequence[AlertIntent]) -> None:
        """Handle the processors' intents at once.

        Meant for the loop's thread; from another thread (e.g. a rule-state replay at
        start-up) they are handed to the loop. Before `run` is ready they are kept, in
        order, and handled right after the restore.
        """
        received = time.perf_counter()
        if not intents:
            return
        with self._early_lock:
            loop = self._loop if self._ready else None
            if loop is None:
                self._early.append((list(intents), received))
                return
        if threading.get_ident() == self._loop_thread:
            self._handle(intents, received)
        else:
            loop.call_soon_threadsafe(self._handle, list(intents), received)

    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        """Staff takes the alert; returns it after. Raises AlertNotFound, IllegalTransition."""
        received = time.perf_counter()
        self._require_ready()
        change = self._service.acknowledge(alert_id, actor, self._clock(), note)
        self._deliver([change], received)
        return change.alert

    def resolve(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        """Staff closes the alert (also straight from open); returns it in its final state."""
        received = time.perf_counter()
        self._require_ready()
        change = self._service.resolve(alert_id, actor, self._clock(), note)
        self._deliver([change], received)
        if self._alert_closed is not None:
            alert = change.alert
            try:
                self._alert_closed.alert_closed(alert.resident_id, alert.kind, alert.device_id)
            except Exception:
                log.exception("alert_closed_hook_failed", alert_id=alert.alert_id)
        return change.alert

    def get(self, alert_id: str) -> Alert:
        """The alert (unresolved or recently closed); raises AlertNotFound."""
        return self._service.get(alert_id)

    def active(self, teams: set[str] | frozenset[str] | None = None) -> list[Alert]:
        """The unresolved alerts that reached one of `teams` (None: all), oldest first."""
        return self._service.active(teams)

    def subscribe(self, teams: set[str] | frozenset[str] | None = None, *,
                  wake: Callable[[], None] | None = None) -> Subscription:
        """Every later change of an alert of `teams` (None: all); `wake` is called as
        soon as one is queued, after its MQTT publish (alerts/fanout.py)."""
        return self._hub.subscribe(teams, wake=wake)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._hub.unsubscribe(subscription)

    def set_registry(self, registry: Registry) -> None:
        self._service.set_registry(registry)

    def _require_ready(self) -> None:
        if not self._ready:
            raise StageNotReady("the alert stage is not running or still restoring")

    # ------------------------------------------------------------------ handling

    def _handle(self, intents: Sequence[AlertIntent], received: float) -> None:
        if not self._ready:  # handed over while the stage stopped: kept for a next run
            with self._early_lock:
                self._early.append((list(intents), received))
            return
        changes: list[Change] = []
        for intent in intents:
            try:
                changes.extend(self._service.apply((intent,)))
            except Exception:
                metrics.DELIVERIES_FAILED.labels("intent").inc()
                log.exception("alert_intent_failed", resident_id=intent.resident_id, kind=str(intent.kind))
        if changes:
            self._deliver(changes, received)
            if self._wakeup is not None:
                self._wakeup.set()

    def _deliver(self, changes: Sequence[Change], received: float) -> None:
        publisher = self._publisher
        # the broker connection these messages go out on (the next one while away)
        connection = publisher.connections + (0 if publisher.connected.is_set() else 1)
        for change in changes:  # MQTT first: this is what staff are waiting for
            alert = change.alert
            if change.final:
                self._sent_on.pop(alert.alert_id, None)
            else:
                self._sent_on[alert.alert_id] = (connection, alert.version)
            try:
                publisher.publish(change)
            except Exception:
                metrics.DELIVERIES_FAILED.labels("mqtt").inc()
                log.exception("alert_publish_failed", alert_id=change.alert.alert_id)
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - received)
        for change in changes:
            if change.reason is ChangeReason.REPUBLISHED:
                continue
            self._hub.publish(change.alert)
            self._send_webhooks(change)
            if self._writer is not None:
                self._writer.put(item_of(change))
            if self._mirror is not None:
                try:
                    self._mirror(item_of(change))
                except Exception:
                    log.exception("alert_mirror_failed", alert_id=change.alert.alert_id)
            self._count(change)
        metrics.ACTIVE.set(len(self._service))

    def _send_webhooks(self, change: Change) -> None:
        for team_id in change.teams:
            team = self._service.team_of(team_id)
            if team is not None and team.webhook_url:
                self._webhooks.send(team.webhook_url, change.alert, team=team_id)

    def _count(self, change: Change) -> None:
        alert = change.alert
        for step in change.transitions:
            if step.from_state is not step.to_state:
                metrics.TRANSITIONS.labels(step.to_state.value).inc()
        reason = change.reason
        fields = {"alert_id": alert.alert_id, "resident_id": alert.resident_id, "kind": alert.kind.value}
        if reason is ChangeReason.OPENED:
            metrics.RAISED.labels(alert.kind.value).inc()
            log.info("alert_opened", **fields, priority=alert.priority.value, team_id=alert.team_id)
        elif reason is ChangeReason.ATTACHED:
            metrics.ATTACHED.labels(alert.kind.value).inc()
            log.debug("alert_trigger_attached", **fields, event_count=alert.event_count)
        elif reason in (ChangeReason.ESCALATED, ChangeReason.REMINDED):
            metrics.ESCALATIONS.labels("team" if reason is ChangeReason.ESCALATED else "reminder").inc()
            log.info("alert_escalated", **fields, escalation_level=alert.escalation_level, teams=list(alert.teams))
        else:
            log.info("alert_state_changed", **fields, state=alert.state.value,
                     actor=change.transitions[-1].actor if change.transitions else None)

    # ------------------------------------------------------------------ broker

    def _broker_connected(self) -> None:  # on the loop, at the publisher's CONNACK
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._republish)

    def _republish(self) -> None:
        """Publish every unresolved alert again, once per broker connection.

        It waits (briefly) until what was queued while the broker was away has been
        acknowledged: those are older states, and must not land after the current one.
        """
        connections = self._publisher.connections
        if not self._ready or connections <= self._republished_for:
            return
        self._republished_for = connections
        task = asyncio.get_running_loop().create_task(self._republish_after_drain(), name="alerts.republish")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _republish_after_drain(self) -> None:
        await self._publisher.flush(REPUBLISH_DRAIN_S)
        if not self._ready:
            return
        # what already went out on this connection in its current version needs no repeat
        connection = self._publisher.connections
        changes = [c for c in self._service.republish()
                   if self._sent_on.get(c.alert.alert_id) != (connection, c.alert.version)]
        if changes:
            log.info("unresolved_alerts_republished", alerts=len(changes))
            self._deliver(changes, time.perf_counter())

    async def _resend_open(self, every_s: float) -> None:
        """Publish the open alerts nobody has taken again, every `every_s`, for
        `RESEND_WITHIN` after their last change (later, escalation and reminders publish
        them again anyway; a bench pressing ten alarms a second kept hundreds open, and
        sending all of them every 2 s cost the brokers more than the events did).

        A NATS node that acknowledged an alert's PUBLISH while a stream it needs had no
        leader (another node had died) did not always deliver it: in the fault drill
        5-17 of 40 alarms pressed in the 10 s after a node's `kill -9` never reached a
        handheld that stayed connected. The same message again (retained, same alert
        id and version) is what a handheld already gets after any reconnect."""
        while True:
            await asyncio.sleep(every_s)
            # While the broker is away nothing is queued again: the reconnect republishes
            # every unresolved alert (`_republish`), and copies queued meanwhile would pile up.
            if not self._ready or not self._publisher.connected.is_set():
                continue
            since = self._clock() - RESEND_WITHIN
            changes = [c for c in self._service.republish()
                       if c.alert.state is AlertState.OPEN and c.alert.updated_at >= since]
            if changes:
                log.debug("open_alerts_sent_again", alerts=len(changes))
                self._deliver(changes, time.perf_counter())

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Restore, then deliver and escalate until cancelled; flush on the way out."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._publisher.start()
        try:
            unwritten = await self._restore_at_start()
            if self._pool is not None:
                self._writer = AlertWriter(AlertStore(self._pool), self._journal,
                                           retry_s=self._retry_s, unwritten=unwritten)
                self._writer.start()
            with self._early_lock:
                self._ready = True
                early, self._early = self._early, []
            self._ready_event.set()
            for intents, received in early:
                self._handle(intents, received)
            self._republish()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._timers(), name="alerts.timers")
                group.create_task(self._webhooks.run(), name="alerts.webhooks")
                if self._restore_pending:
                    group.create_task(self._restore_later(), name="alerts.restore")
                if self._resend_open_s is not None:
                    group.create_task(self._resend_open(self._resend_open_s), name="alerts.resend")
        finally:
            with self._early_lock:
                self._ready = False
            self._ready_event.clear()
            for task in list(self._background):
                task.cancel()
            self._loop = None
            await asyncio.to_thread(self._shutdown)

    def abandon(self) -> None:
        """The stop that follows does not wait for the broker's acknowledgements: the
        partition is another's now (the cluster mode), and its next owner publishes every
        unresolved alert again when it restores."""
        self._flush_s = 0.0

    def _shutdown(self) -> None:
        self._publisher.stop(timeout=self._flush_s)
        if self._writer is not None:
            left = self._writer.stop(timeout=5.0)
            if left:
                log.warning("alert_rows_not_yet_in_postgresql_at_shutdown", rows=left)
        log.info("alert_stage_stopped", active=len(self._service))

    async def _timers(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            wakeup.clear()
            changes = self._service.due(self._clock())
            if changes:
                self._deliver(changes, time.perf_counter())
            deadline = self._service.next_deadline()
            delay = MAX_SLEEP
            if deadline is not None:
                delay = min(MAX_SLEEP, max(0.0, (deadline - self._clock()).total_seconds()))
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wakeup.wait()
            else:
                await asyncio.sleep(0)

    # ------------------------------------------------------------------ restore

    def _load(self) -> list[Alert]:
        assert self._pool is not None
        store = AlertStore(self._pool, wait_s=RESTORE_CONNECT_TIMEOUT_S)
        try:
            return self._owned(store.load(self._clock() - CLOSED_MEMORY))
        finally:
            store.close()

    def _owned(self, alerts: list[Alert]) -> list[Alert]:
        owns = self._owns
        return alerts if owns is None else [a for a in alerts if owns(a.resident_id)]

    async def _restore_at_start(self) -> list[Item]:
        """Restore from the journal and PostgreSQL; returns the journal's unwritten changes."""
        unwritten = self._journal.read() if self._journal is not None else []
        alerts = self._owned([alert for alert, _ in unwritten])
        stored: list[Alert] = []
        if self._pool is not None:
            try:
                stored = await asyncio.to_thread(self._load)
            except DatabaseUnavailable as exc:
                self._restore_pending = True
                log.warning("alerts_restored_from_journal_only", error=str(exc), journal=len(unwritten))
        alerts = stored + alerts
        if self._restored:
            have = {a.alert_id: a.version for a in stored}
            alerts += [alert for alert, _ in self._restored]
            unwritten = [*unwritten, *(i for i in self._restored if i[0].version > have.get(i[0].alert_id, 0))]
            self._restored = []
        taken = self._service.restore(newest(alerts), self._clock())
        active = sum(1 for a in taken if a.active)
        if taken:
            log.info("alerts_restored", active=active, closed=len(taken) - active)
        metrics.ACTIVE.set(len(self._service))
        return unwritten

    async def _restore_later(self) -> None:
        """PostgreSQL was down at start: merge its alerts in when it answers."""
        while True:
            await asyncio.sleep(self._retry_s)
            try:
                stored = await asyncio.to_thread(self._load)
            except DatabaseUnavailable:
                continue
            taken = self._service.restore(stored, self._clock())
            self._restore_pending = False
            fresh: list[Alert] = [a for a in taken if a.active]
            log.info("alerts_restored_from_database_after_it_returned", active=len(fresh))
            self._deliver([Change(ChangeReason.REPUBLISHED, a) for a in fresh], time.perf_counter())
            for alert in fresh:  # news to subscribers (consoles, the emergency state)
                self._hub.publish(alert)
            if self._wakeup is not None:
                self._wakeup.set()
            return


__all__ = ["AlertClosed", "AlertStage"]
