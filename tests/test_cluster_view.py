"""The dashboard's view of the cluster's alerts on a real three-node NATS cluster
(composition/cluster_view.py, docs/cluster.md): every instance sees every alert change on
TRYGG_ALERTS, and staff actions reach the owner of the resident's partition."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from alerts import AlertNotFound, IllegalTransition, StageNotReady
from cluster import Layout, ensure_layout
from cluster.layout import ALERTS_STREAM, alert_subject, command_subject, resident_partition
from composition.cluster_view import ATTEMPT_S, ClusterAlerts
from composition.cluster_wire import Command, alert_item_bytes, reply_error, reply_ok
from dashboard import AlertsPort
from tests.fix_cluster import NatsCluster
from tests.helpers import alert_doc
from trygg.alert import Alert
from trygg.contract import AlertState

pytestmark = [pytest.mark.integration]

T = TypeVar("T")


async def connect(cluster: NatsCluster, node: int) -> NATS:
    """A client connected to `node` first (it moves to another node when that one dies)."""
    urls = cluster.urls[node:] + cluster.urls[:node]
    return await nats.connect(urls, dont_randomize=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def write(nc: NATS, alert: Alert) -> None:
    """Put an alert change on TRYGG_ALERTS as a partition's owner does (retried while the
    cluster elects a leader)."""
    subject = alert_subject(resident_partition(alert.resident_id), alert.alert_id)
    for _ in range(100):
        try:
            await nc.jetstream().publish(subject, alert_item_bytes((alert, ())), timeout=1.0)
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error):
            await asyncio.sleep(0.2)  # no stream leader yet
    raise AssertionError(f"could not write {alert.alert_id}")


def changed(alert: Alert, state: str, actor: str | None = None, note: str | None = None) -> Alert:
    """The alert after one staff action (one version newer)."""
    now = datetime.now(UTC)
    new = AlertState(state)
    return dataclasses.replace(
        alert, state=new, updated_at=now, version=alert.version + 1,
        acknowledged_by=actor if new is AlertState.ACKNOWLEDGED else alert.acknowledged_by,
        resolved_by=actor if new is AlertState.RESOLVED else alert.resolved_by,
        note=note if new is AlertState.RESOLVED else alert.note,
        closed_at=now if new in (AlertState.RESOLVED, AlertState.CANCELLED) else None)


async def until(probe: Callable[[], T], done: Callable[[T], bool], within_s: float = 20.0) -> T:
    deadline = time.monotonic() + within_s
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = probe()
    return value


class Running:
    """A view following the stream on its own connection, until `stop`."""

    def __init__(self, nc: NATS, view: ClusterAlerts) -> None:
        self.nc = nc
        self.view = view
        self.task = asyncio.create_task(view.run(), name="cluster-view")

    @classmethod
    async def start(cls, cluster: NatsCluster, node: int, request_timeout_s: float = 8.0) -> Running:
        nc = await connect(cluster, node)
        running = cls(nc, ClusterAlerts(nc, request_timeout_s=request_timeout_s))
        await asyncio.wait_for(running.view.wait_ready(), 20)
        return running

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.nc.close()


def ids(alerts: list[Alert], prefix: str) -> set[str]:
    return {a.alert_id for a in alerts if a.alert_id.startswith(prefix)}


def active_ids(view: ClusterAlerts, prefix: str) -> Callable[[], set[str]]:
    return lambda: ids(view.active(), prefix)


def resident_in(partition: int, avoid: tuple[str, ...] = ()) -> str:
    """A resident id of this test whose partition is `partition`."""
    return next(r for r in (f"r-{k}" for k in range(1000))
                if resident_partition(r) == partition and r not in avoid)


# ---------------------------------------------------------------------- following


def test_views_on_two_nodes_see_the_same_alerts_and_every_change(nats_cluster: NatsCluster) -> None:
    asyncio.run(two_views(nats_cluster))


async def two_views(cluster: NatsCluster) -> None:
    writer = await connect(cluster, 0)
    await ensure_layout(writer.jetstream(), Layout(), cluster.mqtt[0])
    fall = alert_doc("v1-fall", "r-1", "v1-east")
    alarm = alert_doc("v1-alarm", "r-2", "v1-west", kind="alarm")
    done = changed(alert_doc("v1-done", "r-3", "v1-east"), "resolved", "kari")
    for alert in (fall, alarm, done):
        await write(writer, alert)

    a = await Running.start(cluster, 1)
    b = await Running.start(cluster, 2)
    try:
        assert isinstance(a.view, AlertsPort)  # what the dashboard is served with
        for view in (a.view, b.view):  # what was written before they started
            assert ids(view.active(), "v1-") == {"v1-fall", "v1-alarm"}
            assert await view.get("v1-done") == done
            assert await view.get("v1-nothing") is None
            assert ids(view.active(frozenset({"v1-east"})), "v1-") == {"v1-fall"}
            assert ids(await view.list(frozenset({"v1-west", "other"}), None, None), "v1-") == {"v1-alarm"}
            assert await view.open_alerts_of("r-2") == [alarm]

        woken = {"all": 0, "east": 0}
        every = a.view.subscribe(None, lambda: woken.__setitem__("all", woken["all"] + 1))
        east = b.view.subscribe(frozenset({"v1-east"}), lambda: woken.__setitem__("east", woken["east"] + 1))

        acked = changed(fall, "acknowledged", "kari")
        resolved = changed(alarm, "resolved", "ola", "went well")
        new = alert_doc("v1-new", "r-4", "v1-north", teams=["v1-north", "v1-east"])  # escalated to east
        for alert in (acked, resolved, new):
            await write(writer, alert)
        await write(writer, fall)  # an older version seen late changes nothing

        for view in (a.view, b.view):
            shown = await until(active_ids(view, "v1-"), lambda s: s == {"v1-fall", "v1-new"})
            assert shown == {"v1-fall", "v1-new"}
            assert await view.get("v1-fall") == acked
            assert await view.get("v1-alarm") == resolved  # recently closed: still found by id
            assert ids(await view.list(None, "acknowledged", None), "v1-") == {"v1-fall"}
            assert await view.open_alerts_of("r-2") == []

        seen_all = [x for x in iter(every.get_nowait, None) if x.alert_id.startswith("v1-")]
        seen_east = [x for x in iter(east.get_nowait, None) if x.alert_id.startswith("v1-")]
        assert seen_all == [acked, resolved, new]
        assert seen_east == [acked, new]  # the west alarm did not reach east
        assert woken["all"] >= 3 and woken["east"] >= 2
        every.close()
        east.close()
    finally:
        await a.stop()
        await b.stop()
        await writer.close()


def test_a_view_is_not_ready_before_it_caught_up(nats_cluster: NatsCluster) -> None:
    asyncio.run(not_ready_before(nats_cluster))


async def not_ready_before(cluster: NatsCluster) -> None:
    nc = await connect(cluster, 0)
    await ensure_layout(nc.jetstream(), Layout(), cluster.mqtt[0])
    view = ClusterAlerts(nc)
    try:
        with pytest.raises(StageNotReady):
            await view.list(None, None, None)
        with pytest.raises(StageNotReady):
            await view.acknowledge("v2-any", "kari")
        task = asyncio.create_task(view.run())
        await asyncio.wait_for(view.wait_ready(), 20)
        info = await nc.jetstream().stream_info(ALERTS_STREAM)
        assert view.last_seq >= info.state.last_seq or info.state.last_seq == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not view.ready  # a view that stopped following says so
    finally:
        await nc.close()


# ---------------------------------------------------------------------- staff actions


class Owner:
    """A partition's owner as far as staff actions go: a responder on the partition's
    command subject, answering from the alerts it holds (or with `answers`, in turn)."""

    def __init__(self, nc: NATS, partition: int, alerts: list[Alert], answers: list[bytes] | None = None,
                 *, slow_s: float = 0.0) -> None:
        self.nc = nc
        self.partition = partition
        self.alerts = {a.alert_id: a for a in alerts}
        self.answers = list(answers or [])
        self.slow_s = slow_s  # the first change is put on the stream, and answered, this late
        self.commands: list[Command] = []
        self.sub: Subscription | None = None

    async def serve(self) -> Owner:
        self.sub = await self.nc.subscribe(command_subject(self.partition), cb=self._handle)
        await self.nc.flush()
        return self

    async def _handle(self, msg: Msg) -> None:
        command = Command.from_bytes(msg.data)
        self.commands.append(command)
        if self.answers:
            await msg.respond(self.answers.pop(0))
            return
        alert = self.alerts.get(command.alert_id)
        if alert is None:
            await msg.respond(reply_error("not_found", "no such alert"))
            return
        target = "acknowledged" if command.op == "acknowledge" else "resolved"
        allowed = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}[target]
        if alert.state not in allowed:
            await msg.respond(reply_error("illegal", f"{alert.state} → {target}"))
            return
        after = changed(alert, target, command.actor, command.note)
        self.alerts[after.alert_id] = after
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
            self.slow_s = 0.0
            await write(self.nc, after)
        await msg.respond(reply_ok(after))

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()


def test_staff_actions_reach_the_owner_of_the_residents_partition(nats_cluster: NatsCluster) -> None:
    asyncio.run(actions(nats_cluster))


async def actions(cluster: NatsCluster) -> None:
    writer = await connect(cluster, 0)
    await ensure_layout(writer.jetstream(), Layout(), cluster.mqtt[0])
    mine, other, nobody = resident_in(3), resident_in(5), resident_in(7)
    fall = alert_doc("v3-fall", mine, "v3-east")
    gone = alert_doc("v3-gone", mine, "v3-east")
    beside = alert_doc("v3-beside", other, "v3-east")
    orphan = alert_doc("v3-orphan", nobody, "v3-east")
    for alert in (fall, gone, beside, orphan):
        await write(writer, alert)
    owners = await connect(cluster, 0)
    owner = await Owner(owners, 3, [fall, beside]).serve()  # beside is not its: it must never be asked
    neighbour = await Owner(owners, 5, [beside]).serve()
    running = await Running.start(cluster, 2, request_timeout_s=1.5)
    view = running.view
    try:
        acked = await view.acknowledge("v3-fall", "kari")
        assert (acked.state, acked.acknowledged_by, acked.version) == ("acknowledged", "kari", 2)
        assert await view.get("v3-fall") == acked  # taken at once, before the owner's stream change
        assert [c.op for c in owner.commands] == ["acknowledge"] and neighbour.commands == []

        resolved = await view.resolve("v3-beside", "ola", "all well")
        assert (resolved.state, resolved.resolved_by, resolved.note) == ("resolved", "ola", "all well")
        assert [c.alert_id for c in neighbour.commands] == ["v3-beside"]
        assert ids(view.active(), "v3-") == {"v3-fall", "v3-gone", "v3-orphan"}

        with pytest.raises(AlertNotFound):  # the owner does not know it
            await view.resolve("v3-gone", "kari", None)
        with pytest.raises(AlertNotFound):  # nobody knows it
            await view.acknowledge("v3-never", "kari")
        with pytest.raises(IllegalTransition) as illegal:
            await view.acknowledge("v3-fall", "ola")
        assert (illegal.value.from_state, illegal.value.to_state) == ("acknowledged", "acknowledged")

        started = time.monotonic()  # partition 7 has no owner
        with pytest.raises(StageNotReady):
            await view.acknowledge("v3-orphan", "kari")
        waited = time.monotonic() - started
        assert 1.4 <= waited <= 1.5 + ATTEMPT_S + 0.5, waited

        late = Owner(owners, 7, [orphan])  # an owner that takes over during the retries
        asking = asyncio.create_task(view.acknowledge("v3-orphan", "kari"))
        await asyncio.sleep(0.5)
        assert not asking.done()
        await late.serve()
        taken = await asyncio.wait_for(asking, 3)
        assert (taken.state, taken.acknowledged_by) == ("acknowledged", "kari")
        await late.stop()

        restoring = await Owner(owners, 7, [], [reply_error("not_ready", "restoring"),
                                                reply_error("not_ready", "restoring"),
                                                reply_ok(changed(taken, "resolved", "ola"))]).serve()
        after = await view.resolve("v3-orphan", "ola", None)  # asked again while the owner restores
        assert after.state == "resolved" and len(restoring.commands) == 3
        assert ids(view.active(), "v3-") == {"v3-fall", "v3-gone"}
        await restoring.stop()
    finally:
        await owner.stop()
        await neighbour.stop()
        await running.stop()
        await owners.close()
        await writer.close()


def test_an_action_whose_answer_was_late_is_not_refused_when_asked_again(nats_cluster: NatsCluster) -> None:
    asyncio.run(late_answer(nats_cluster))


async def late_answer(cluster: NatsCluster) -> None:
    """The owner makes the change but answers after the view stopped waiting; asked again,
    it refuses (already acknowledged): the view answers with the change made."""
    writer = await connect(cluster, 0)
    await ensure_layout(writer.jetstream(), Layout(), cluster.mqtt[0])
    fall = alert_doc("v6-fall", resident_in(9), "v6-east")
    await write(writer, fall)
    owners = await connect(cluster, 1)
    owner = await Owner(owners, 9, [fall], slow_s=ATTEMPT_S + 0.3).serve()
    running = await Running.start(cluster, 2, request_timeout_s=ATTEMPT_S + 3)
    try:
        acked = await running.view.acknowledge("v6-fall", "kari")
        assert (acked.state, acked.acknowledged_by) == ("acknowledged", "kari")
        assert len(owner.commands) == 2  # asked again after the first attempt timed out
        with pytest.raises(IllegalTransition):  # someone else, later: refused
            await running.view.acknowledge("v6-fall", "ola")
    finally:
        await owner.stop()
        await running.stop()
        await owners.close()
        await writer.close()


# ---------------------------------------------------------------------- emergencies


def test_emergency_open_follows_alarm_and_fall_alerts(nats_cluster: NatsCluster) -> None:
    asyncio.run(emergencies(nats_cluster))


async def emergencies(cluster: NatsCluster) -> None:
    writer = await connect(cluster, 0)
    await ensure_layout(writer.jetstream(), Layout(), cluster.mqtt[0])
    first = alert_doc("v4-alarm-1", "v4-r", "v4-east", kind="alarm")
    await write(writer, first)
    running = await Running.start(cluster, 1)
    view = running.view
    try:
        assert view.emergency_open("v4-r")  # open before the view started
        assert not view.emergency_open("v4-other")
        second = alert_doc("v4-alarm-2", "v4-r", "v4-east", kind="alarm")
        battery = alert_doc("v4-battery", "v4-b", "v4-east", kind="battery_low", priority="low")
        fall = alert_doc("v4-fall", "v4-f", "v4-east", kind="fall")
        for alert in (second, battery, fall):
            await write(writer, alert)
        assert await until(lambda: view.emergency_open("v4-f"), bool)
        assert not view.emergency_open("v4-b")  # not an emergency

        acked = changed(first, "acknowledged", "kari")
        await write(writer, acked)
        await until(lambda: [a.state for a in view.active() if a.alert_id == "v4-alarm-1"],
                    lambda s: s == ["acknowledged"])
        assert view.emergency_open("v4-r")  # acknowledged is still an emergency

        await write(writer, changed(acked, "resolved", "kari"))
        assert not await until(lambda: ids(view.active(), "v4-alarm-1"), lambda s: not s)
        assert view.emergency_open("v4-r")  # the second alarm is still open

        await write(writer, changed(second, "cancelled"))
        await write(writer, changed(fall, "resolved", "ola"))
        assert await until(lambda: view.emergency_open("v4-r") or view.emergency_open("v4-f"),
                           lambda x: not x) is False
    finally:
        await running.stop()
        await writer.close()


# ---------------------------------------------------------------------- a node dies


@pytest.mark.serial
@pytest.mark.parametrize("dies", ["its connection", "its consumer"])
def test_a_view_keeps_following_when_a_nats_node_dies(nats_cluster: NatsCluster, dies: str) -> None:
    try:
        asyncio.run(node_dies(nats_cluster, dies, f"v5{dies[4:6]}-"))
    finally:
        for node, proc in enumerate(nats_cluster.procs):
            if proc is None:
                nats_cluster.start(node)
        nats_cluster.wait_ready()


def node_named(cluster: NatsCluster, name: str | None) -> int:
    return next(i for i, n in enumerate(cluster.nodes) if n.name == name)


async def consumer_node(nc: NATS, cluster: NatsCluster, view: ClusterAlerts) -> int:
    """The node the view's consumer is on."""
    assert view.consumer is not None
    info = await nc.jetstream().consumer_info(ALERTS_STREAM, view.consumer)
    assert info.cluster is not None
    return node_named(cluster, info.cluster.leader)


async def node_dies(cluster: NatsCluster, dies: str, prefix: str) -> None:
    """Kill the node a view is connected to (it leads the stream too: the stream takes no
    change for a few seconds), or the node its consumer is on (the view is connected to
    another node if the consumer lands there within a few tries); a change written after
    the kill still reaches the view."""
    probe = await connect(cluster, 0)
    await ensure_layout(probe.jetstream(), Layout(), cluster.mqtt[0])
    info = await probe.jetstream().stream_info(ALERTS_STREAM)
    assert info.cluster is not None
    leader = node_named(cluster, info.cluster.leader)
    if dies == "its connection":
        running = await Running.start(cluster, leader)
        node = leader
    else:
        for _ in range(5):
            running = await Running.start(cluster, (leader + 1) % 3)
            node = await consumer_node(probe, cluster, running.view)
            if node != (leader + 1) % 3:
                break
            await running.stop()
    await probe.close()
    view = running.view
    writer = await connect(cluster, next(i for i in range(3) if i != node and i != (leader + 1) % 3))
    before = alert_doc(f"{prefix}before", "r-1", "v5-east")
    await write(writer, before)
    try:
        assert await until(active_ids(view, prefix), lambda s: s == {before.alert_id})
        consumer = view.consumer
        cluster.kill(node)
        killed = time.monotonic()
        after = alert_doc(f"{prefix}after", "r-2", "v5-east")
        await write(writer, after)
        await write(writer, changed(before, "resolved", "kari"))
        written = time.monotonic()
        shown = await until(active_ids(view, prefix), lambda s: s == {after.alert_id}, within_s=30)
        assert shown == {after.alert_id}, f"{time.monotonic() - killed:.1f} s after the kill"
        print(f"{dies} died (node {node}, the view on node {(leader + 1) % 3 if dies != 'its connection' else node}): "
              f"the stream took changes {written - killed:.1f} s after the kill; "
              f"the view had them {time.monotonic() - killed:.1f} s after it, "
              f"{'on the same consumer' if view.consumer == consumer else 'on a consumer made again'}")
        assert view.ready and not running.task.done()
    finally:
        await running.stop()
        await writer.close()
