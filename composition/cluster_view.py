"""Every alert of the cluster as one instance's dashboard sees it (docs/cluster.md).

In the cluster, the alerts of a resident live with the owner of the resident's partition
(composition/cluster_rules.py), which puts every change of an alert on `TRYGG_ALERTS`
(the stream keeps the last one of each alert). `ClusterAlerts` follows that stream on
every instance, so that any instance serves the API and the live console for every team:

- `run` reads the stream with an ordered consumer (nats-py re-creates it from the next
  stream sequence when it misses heartbeats, e.g. after the NATS node it was on died):
  first the last change of every alert, then each change as it is made. `wait_ready`
  returns once it has caught up with what the stream held when it started.
- It keeps the unresolved alerts, and the recently closed ones by id; a change replaces
  what it holds only if it is newer (`Alert.version`), so a change seen twice — from the
  stream and in the owner's reply, or again from the next owner — counts once.
- Each change it takes goes to its subscribers (alerts/fanout.py `AlertHub`).
- Staff actions are requests to the partition's owner (`cluster.layout.command_subject`,
  composition/cluster_wire.py). While the partition has no owner (it is moving, or the
  owner is still restoring) the request is repeated until `request_timeout_s`, then
  `StageNotReady` (503). The alert in the owner's reply is taken at once. An attempt
  whose answer was lost may still have made the change: when the owner then refuses the
  repeated request as illegal, the view waits a moment for the stream to show the change
  made by the same actor and answers with it.

It is the dashboard's `AlertsPort` and the gateway's `EmergencyState` (a look-up in a
dict, safe to ask from another thread). Its methods run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from alerts import AlertError, AlertHub, AlertNotFound, IllegalTransition, StageNotReady
from alerts.fanout import SUBSCRIBER_LIMIT
from alerts.service import CLOSED_KEPT
from cluster.layout import (
    ALERTS_STREAM,
    RESIDENT_PARTITIONS,
    alerts_filter,
    cancel_not_lost,
    command_subject,
    resident_partition,
)
from composition.app import EMERGENCY_KINDS
from composition.cluster_wire import Command, Op, alert_item_of, parse_reply
from dashboard.deps import SubscriptionFeed
from trygg.alert import Alert
from trygg.backoff import Backoff
from trygg.contract import AlertState
from trygg.logging import get_logger

log = get_logger(__name__)

#: heartbeats of the ordered consumer: two missed ones (a dead node) re-create it
HEARTBEAT_S: Final = 1.0
#: how long a JetStream request may take (re-creating the consumer is asked again after it)
JS_TIMEOUT_S: Final = 2.0
#: how long one request to a partition's owner may take before it is asked again
ATTEMPT_S: Final = 2.0
#: how often `run` looks at the connection (and, while catching up, asks the consumer
#: whether anything is left)
CHECK_S: Final = 1.0
#: how long a refusal after a lost answer waits for the stream to show the change made
LOST_ANSWER_S: Final = 1.0
#: the state each staff action leads to
TARGET: Final[dict[Op, AlertState]] = {"acknowledge": AlertState.ACKNOWLEDGED, "resolve": AlertState.RESOLVED}

#: alerts as the port hands them out (a name of its own: `list` is a method of the port)
AlertList = list[Alert]


class ClusterAlerts:
    """The alerts of every partition, followed from `TRYGG_ALERTS` (see the module)."""

    def __init__(self, nc: NATS, *, resident_partitions: int = RESIDENT_PARTITIONS,
                 request_timeout_s: float = 8.0, subscriber_limit: int = SUBSCRIBER_LIMIT,
                 closed_kept: int = CLOSED_KEPT) -> None:
        self._nc = nc
        self._partitions = resident_partitions
        self._request_timeout_s = request_timeout_s
        self._closed_kept = closed_kept
        self._active: dict[str, Alert] = {}
        self._closed: OrderedDict[str, Alert] = OrderedDict()
        #: resident → ids of their unresolved alarm and fall alerts
        self._emergencies: dict[str, set[str]] = {}
        self._hub = AlertHub(subscriber_limit)
        self._ready = asyncio.Event()
        #: the stream sequence of the last change taken, and the one to catch up to
        self.last_seq = 0
        self._until = 0
        self._sub: JetStreamContext.PushSubscription | None = None

    # ------------------------------------------------------------------ following the stream

    async def run(self) -> None:
        """Follow `TRYGG_ALERTS` until cancelled: the last change of every alert, then live.
        Raises ConnectionClosedError when the NATS connection is closed for good."""
        js = self._nc.jetstream(timeout=JS_TIMEOUT_S)
        sub = self._sub = await self._follow(js)
        try:
            while True:
                await asyncio.sleep(CHECK_S)
                if self._nc.is_closed:
                    raise nats.errors.ConnectionClosedError
                if not self._ready.is_set():
                    await self._check_caught_up(sub)
        finally:
            self._ready.clear()
            self._sub = None
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be gone: the consumer ends with it
                log.warning("cluster_alerts_unsubscribe_failed")

    async def wait_ready(self) -> None:
        """Until `run` has caught up with what the stream held when it started."""
        await self._ready.wait()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def consumer(self) -> str | None:
        """The name of the consumer followed now (a new one after it was re-created)."""
        return None if self._sub is None else self._sub._consumer

    async def _follow(self, js: JetStreamContext) -> JetStreamContext.PushSubscription:
        """An ordered consumer of the last change of every alert, then of every change,
        taken by `_take` (in order, on the subscription's task); repeated while the
        cluster does not answer (it may be electing a leader)."""
        backoff = Backoff(0.1, 2.0)
        while True:
            cancel_not_lost()
            try:
                info = await js.stream_info(ALERTS_STREAM)
                self._until = info.state.last_seq
                if self._until == 0:
                    self._caught_up()
                sub = await js.subscribe(alerts_filter(), stream=ALERTS_STREAM, cb=self._take, ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, idle_heartbeat=HEARTBEAT_S)
                log.info("cluster_alerts_following", catch_up_to=self._until)
                return sub
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError,
                    nats.errors.ConnectionReconnectingError) as exc:
                wait = backoff.next()
                log.warning("cluster_alerts_follow_retry", error=repr(exc), retry_in_s=round(wait, 2))
                await asyncio.sleep(wait)

    async def _take(self, msg: Msg) -> None:
        """One message of the stream: an alert change (a malformed one is logged and skipped)."""
        meta = msg.metadata
        seq = meta.sequence.stream
        try:
            alert, _ = alert_item_of(msg.data)
        except (KeyError, ValueError, TypeError) as exc:
            log.error("cluster_alert_unreadable", subject=msg.subject, seq=seq, error=repr(exc))
        else:
            try:
                self.apply(alert)
            except Exception:
                log.exception("cluster_alert_not_taken", alert_id=alert.alert_id, seq=seq)
        self.last_seq = max(self.last_seq, seq)
        if not self._ready.is_set() and (seq >= self._until or meta.num_pending == 0):
            self._caught_up()

    async def _check_caught_up(self, sub: JetStreamContext.PushSubscription) -> None:
        """Caught up when the consumer has nothing left and every change it delivered
        was taken (the stream's last change may have expired in the meantime)."""
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # the consumer is being re-created: ask again later
            log.info("cluster_alerts_catch_up_unknown", error=repr(exc))
            return
        if info.num_pending == 0 and info.delivered is not None and self.last_seq >= (info.delivered.stream_seq or 0):
            self._caught_up()

    def _caught_up(self) -> None:
        self._ready.set()
        log.info("cluster_alerts_ready", active=len(self._active), closed=len(self._closed), seq=self.last_seq)

    # ------------------------------------------------------------------ the view

    def apply(self, alert: Alert) -> bool:
        """Take one alert as it is after a change, if it is newer than what is held;
        subscribers get it then. Returns whether it was taken."""
        alert_id = alert.alert_id
        known = self._active.get(alert_id) or self._closed.get(alert_id)
        if known is not None and known.version >= alert.version:
            return False
        if alert.active:
            self._closed.pop(alert_id, None)
            self._active[alert_id] = alert
        else:
            self._active.pop(alert_id, None)
            self._closed[alert_id] = alert
            self._closed.move_to_end(alert_id)
            while len(self._closed) > self._closed_kept:
                self._closed.popitem(last=False)
        self._note_emergency(alert)
        self._hub.publish(alert)
        return True

    def _note_emergency(self, alert: Alert) -> None:
        if alert.kind not in EMERGENCY_KINDS:
            return
        resident = alert.resident_id
        if alert.active:
            self._emergencies.setdefault(resident, set()).add(alert.alert_id)
            return
        ids = self._emergencies.get(resident)
        if ids is not None:
            ids.discard(alert.alert_id)
            if not ids:
                del self._emergencies[resident]

    def emergency_open(self, resident_id: str) -> bool:
        """Whether an alarm or fall alert of the resident is open or acknowledged."""
        return bool(self._emergencies.get(resident_id))

    def active(self, teams: frozenset[str] | None = None) -> AlertList:
        """The unresolved alerts that reached one of `teams` (None: all), oldest first."""
        self._require_ready()
        alerts = sorted(self._active.values(), key=lambda a: a.opened_at)
        return [a for a in alerts if teams is None or not teams.isdisjoint(a.teams)]

    def _require_ready(self) -> None:
        if not self._ready.is_set():
            raise StageNotReady("this instance is still reading the cluster's alerts")

    def _find(self, alert_id: str) -> Alert:
        self._require_ready()
        alert = self._active.get(alert_id) or self._closed.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    # ------------------------------------------------------------------ AlertsPort

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> AlertList:
        """Unresolved alerts only: closed ones are read from the database by the routes."""
        if state in (AlertState.RESOLVED, AlertState.CANCELLED):
            return []
        return [a for a in self.active(teams)
                if (state is None or a.state == state) and (since is None or a.updated_at >= since)]

    async def get(self, alert_id: str) -> Alert | None:
        try:
            return self._find(alert_id)
        except AlertNotFound:
            return None

    async def acknowledge(self, alert_id: str, actor: str) -> Alert:
        return await self._act(Command("acknowledge", alert_id, actor))

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> Alert:
        return await self._act(Command("resolve", alert_id, actor, note))

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> SubscriptionFeed:
        return SubscriptionFeed(self._hub.subscribe(teams, wake=wake))

    async def open_alerts_of(self, resident_id: str) -> AlertList:
        return [a for a in self.active(None) if a.resident_id == resident_id]

    # ------------------------------------------------------------------ staff actions

    async def _act(self, command: Command) -> Alert:
        """Ask the owner of the alert's partition to make the change; the alert after it."""
        alert = self._find(command.alert_id)
        partition = resident_partition(alert.resident_id, self._partitions)
        subject = command_subject(partition)
        payload = command.to_bytes()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._request_timeout_s
        backoff = Backoff(0.05, 0.5)
        timed_out = False  # an earlier attempt may have been made without its answer reaching us
        while True:
            cancel_not_lost()
            left = deadline - loop.time()
            if left <= 0:
                log.warning("cluster_alert_action_no_owner", alert_id=command.alert_id, partition=partition,
                            op=command.op)
                raise StageNotReady(f"no owner of resident partition {partition} answered "
                                    f"within {self._request_timeout_s:g} s")
            try:
                msg = await self._nc.request(subject, payload, timeout=min(left, ATTEMPT_S))
            except nats.errors.NoRespondersError:
                pass  # no owner right now: the partition is moving
            except TimeoutError:
                timed_out = True
            else:
                done = await self._answer(command, msg.data, timed_out)
                if done is not None:
                    return done
            await asyncio.sleep(min(backoff.next(), max(0.0, deadline - loop.time())))

    async def _answer(self, command: Command, payload: bytes, timed_out: bool) -> Alert | None:
        """The alert after the change, None to ask again (the owner is not ready), or the
        error the owner's answer stands for."""
        try:
            reply = parse_reply(payload)
        except (KeyError, ValueError, TypeError) as exc:
            raise AlertError(f"the owner's answer could not be read: {exc!r}") from None
        if isinstance(reply, Alert):
            self.apply(reply)
            return reply
        code, message = reply
        if code == "not_ready":
            return None
        if code == "not_found":
            raise AlertNotFound(command.alert_id)
        if code == "illegal":
            to_state = TARGET[command.op]
            if timed_out:  # an attempt whose answer was lost may have made the change
                made = await self._made_by(command, to_state)
                if made is not None:
                    return made
            current = self._active.get(command.alert_id) or self._closed.get(command.alert_id)
            raise IllegalTransition(command.alert_id, current.state if current else to_state, to_state)
        raise AlertError(f"the owner refused the request ({code}): {message}")

    async def _made_by(self, command: Command, to_state: AlertState) -> Alert | None:
        """The alert once the stream shows `command`'s change made by its actor (within
        LOST_ANSWER_S), else None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOST_ANSWER_S
        while True:
            current = self._active.get(command.alert_id) or self._closed.get(command.alert_id)
            if current is not None and current.state == to_state and command.actor == (
                    current.acknowledged_by if to_state is AlertState.ACKNOWLEDGED else current.resolved_by):
                return current
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)


__all__ = ["ClusterAlerts"]
