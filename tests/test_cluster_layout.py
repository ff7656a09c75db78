"""The cluster's layout and leases on a real three-node NATS cluster (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import nats
import pytest
from nats.aio.client import Client as NATS

from cluster import Layout, Leases, device_from_subject, ensure_layout, ingest_consumer
from cluster.layout import MQTT_STREAM, RESIDENTS_STREAM
from cluster.leases import TICK_S, Ownership
from tests.fix_cluster import NatsCluster

pytestmark = [pytest.mark.integration]


async def connect(cluster: NatsCluster) -> NATS:
    return await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def laid_out(cluster: NatsCluster) -> NATS:
    nc = await connect(cluster)
    await ensure_layout(nc.jetstream(), Layout(), cluster.mqtt[0])
    return nc


def publish(cluster: NatsCluster, node: int, topic: str, payload: str) -> None:
    host, port = cluster.mqtt[node]
    subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-t", topic, "-m", payload],
                   check=True, timeout=10)


def test_device_ids_with_dots_stay_distinct_and_are_kept_until_taken(nats_cluster: NatsCluster) -> None:
    asyncio.run(device_ids_with_dots(nats_cluster))


async def device_ids_with_dots(nats_cluster: NatsCluster) -> None:
    nc = await laid_out(nats_cluster)
    js = nc.jetstream()
    for node, device in enumerate(["a.b", "a_b", "ab"]):
        publish(nats_cluster, node, f"trygg/v1/devices/{device}/events", f'{{"d": "{device}"}}')
    seen: dict[str, bytes] = {}
    for p in range(16):
        sub = await js.pull_subscribe_bind(ingest_consumer(p), MQTT_STREAM)
        try:
            for msg in await sub.fetch(10, timeout=0.5):
                device, channel = device_from_subject(msg.subject)
                assert channel == "events"
                seen[device] = msg.data
                await msg.ack()
        except TimeoutError:  # nats-py raises its own or asyncio's
            pass
        finally:
            await sub.unsubscribe()
    assert seen == {"a.b": b'{"d": "a.b"}', "a_b": b'{"d": "a_b"}', "ab": b'{"d": "ab"}'}
    info = await js.stream_info(RESIDENTS_STREAM)
    assert info.config.num_replicas == 3
    await nc.close()


def test_a_lease_has_one_holder_and_passes_on_when_its_holder_stops_renewing(nats_cluster: NatsCluster) -> None:
    asyncio.run(one_holder(nats_cluster))


async def one_holder(nats_cluster: NatsCluster) -> None:
    nc = await laid_out(nats_cluster)
    js = nc.jetstream()
    a, b = Leases(js, "a", ttl_s=1.0, bucket="test_leases"), Leases(js, "b", ttl_s=1.0, bucket="test_leases")
    await a.open()
    await b.open()
    assert await a.acquire("rules.1")
    assert not await b.acquire("rules.1")
    assert await a.renew("rules.1")
    assert await b.owner("rules.1") == "a"
    await asyncio.sleep(2.5)  # a stopped renewing: the bucket's TTL removes its key
    assert await b.acquire("rules.1")
    assert not await a.renew("rules.1")
    await b.release("rules.1")
    assert await a.owner("rules.1") is None
    assert await b.renew("rules.1") and "rules.1" not in b.held  # given back before a renewal: not lost

    # Expired with nobody else taking it (no renewal could be written while the bucket's
    # leader was being elected): its holder takes it again instead of letting it move.
    assert await a.acquire("rules.2")
    await asyncio.sleep(2.5)
    assert await b.owner("rules.2") is None
    assert await a.renew("rules.2")
    assert await b.owner("rules.2") == "a" and not await b.acquire("rules.2")
    await nc.close()


def test_two_instances_share_the_partitions_and_the_survivor_takes_all(nats_cluster: NatsCluster) -> None:
    asyncio.run(share(nats_cluster))


async def share(nats_cluster: NatsCluster) -> None:
    nc = await laid_out(nats_cluster)
    js = nc.jetstream()
    names = [f"rules.{p}" for p in range(8)]
    held: dict[str, set[str]] = {"a": set(), "b": set()}

    def ownership(instance: str) -> Ownership:
        async def gain(name: str) -> None:
            held[instance].add(name)

        async def lose(name: str) -> None:
            held[instance].discard(name)

        leases = Leases(js, instance, ttl_s=1.5, bucket="test_share")
        return Ownership(leases, [names], gain, lose, tick_s=0.2)

    a, b = ownership("a"), ownership("b")
    await a.leases.open()
    await b.leases.open()
    ta = asyncio.create_task(a.run())
    tb = asyncio.create_task(b.run())
    for _ in range(100):
        await asyncio.sleep(0.1)
        if len(held["a"]) == 4 and len(held["b"]) == 4:
            break
    assert held["a"].isdisjoint(held["b"]) and len(held["a"]) == len(held["b"]) == 4
    tb.cancel()  # a clean stop gives its leases back at once
    await asyncio.gather(tb, return_exceptions=True)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if held["a"] == set(names):
            break
    assert held["a"] == set(names) and held["b"] == set()
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    await nc.close()


def recorded(changes: list[tuple[float, str, str, str]], leases: Leases, names: list[str], *,
             stop_s: float = 0.0, tick_s: float = TICK_S) -> Ownership:
    """An instance's ownership whose owner notes each partition it starts and stops in
    `changes`, a stop taking `stop_s`."""
    async def gain(name: str) -> None:
        changes.append((time.monotonic(), leases.instance, "gain", name))

    async def lose(name: str) -> None:
        await asyncio.sleep(stop_s)
        changes.append((time.monotonic(), leases.instance, "lose", name))

    def abandon(name: str) -> None:
        changes.append((time.monotonic(), leases.instance, "abandon", name))

    return Ownership(leases, [names], gain, lose, abandon=abandon, tick_s=tick_s)


def replay(changes: list[tuple[float, str, str, str]], names: list[str], *, until: float,
           since: float) -> tuple[dict[str, set[str]], list[str]]:
    """Who held each partition at `until`, from the (time, instance, "gain" | "lose",
    partition) log of the owners' callbacks; and every gain while another held it."""
    holders: dict[str, set[str]] = {name: set() for name in names}
    overlaps = []
    for at, instance, change, name in sorted(changes):
        if at >= until:
            break
        if change == "abandon":
            continue
        if change == "gain":
            if holders[name]:
                overlaps.append(f"{name}: {instance} took it {at - since:+.1f} s, held by {holders[name]}")
            holders[name].add(instance)
        else:
            holders[name].discard(instance)
    return holders, overlaps


@pytest.mark.serial  # a lease's timing against the server's election
def test_no_partition_has_two_holders_when_the_node_leading_the_leases_dies(nats_cluster: NatsCluster) -> None:
    """The bucket's leader dies: for the 4-9 s of the election no renewal can be
    written, and the new leader expires every lease at once. Each holder must have
    given its partitions up (80 % of the TTL after its last renewal) before another
    instance can take them; afterwards every partition has one holder again. Seen in
    bench/cluster: a holder whose renewals each waited for a request timeout, one after
    another, went on running partitions for 5 s after the other instance had taken them."""
    try:
        asyncio.run(leader_dies(nats_cluster))
    finally:
        for i, proc in enumerate(nats_cluster.procs):
            if proc is None:
                nats_cluster.start(i)
        nats_cluster.wait_ready()


async def leader_dies(cluster: NatsCluster) -> None:
    nc = await laid_out(cluster)
    js = nc.jetstream()
    names = [f"rules.{p}" for p in range(8)]
    #: (time.monotonic(), instance, "gain" | "lose", partition)
    changes: list[tuple[float, str, str, str]] = []

    connections = [await connect(cluster), await connect(cluster)]
    a, b = (recorded(changes, Leases(c.jetstream(), instance, bucket="test_leader_dies"), names)  # default TTL
            for instance, c in zip("ab", connections, strict=True))
    await a.leases.open()
    await b.leases.open()
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    for _ in range(100):
        await asyncio.sleep(0.1)
        if len(a.leases.held) == len(b.leases.held) == 4:
            break
    info = (await js.stream_info("KV_test_leader_dies")).cluster
    assert info is not None
    leader = info.leader
    cluster.kill(next(i for i, n in enumerate(cluster.nodes) if n.name == leader))
    killed = time.monotonic()
    await asyncio.sleep(20)
    stopped = time.monotonic()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in (*connections, nc):
        await connection.close()

    holders, overlaps = replay(changes, names, until=stopped, since=killed)  # the clean stop gives all back
    assert not overlaps, overlaps
    # every partition has a holder again (mostly the one it had: each instance takes its
    # own back first, but one whose connection is slower to return may find some taken)
    assert all(len(h) == 1 for h in holders.values()), "; ".join(
        f"{at - killed:+.1f} s {instance} {change} {name}" for at, instance, change, name in changes)


def test_partitions_handed_over_slowly_leave_the_others_renewed(nats_cluster: NatsCluster) -> None:
    """An instance joins while the holder's partitions are slow to stop (PostgreSQL down:
    each stop waits seconds for its alert rows). The hand-over must not hold up the
    renewal of the partitions the holder keeps: in the fault drill it did, the holder's
    other leases ran out while it still ran them, another instance took them, and an
    alarm's alert row never reached PostgreSQL."""
    asyncio.run(slow_hand_over(nats_cluster))


async def slow_hand_over(cluster: NatsCluster) -> None:
    nc = await laid_out(cluster)
    names = [f"rules.{p}" for p in range(8)]
    changes: list[tuple[float, str, str, str]] = []

    def ownership(instance: str, stop_s: float) -> Ownership:
        leases = Leases(nc.jetstream(), instance, ttl_s=2.0, bucket="test_slow_hand_over")
        return recorded(changes, leases, names, stop_s=stop_s, tick_s=0.2)

    a, b = ownership("a", 3.0), ownership("b", 0.0)
    await a.leases.open()
    ta = asyncio.create_task(a.run())
    for _ in range(100):
        await asyncio.sleep(0.1)
        if len(a.leases.held) == len(names):
            break
    await b.leases.open()
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(8)
    stopped = time.monotonic()
    assert len(a.leases.held) == len(b.leases.held) == 4, (sorted(a.leases.held), sorted(b.leases.held))
    taken_by_b = set(b.leases.held)
    for task in (ta, tb):
        task.cancel()
    await asyncio.gather(ta, tb, return_exceptions=True)
    await nc.close()
    _, overlaps = replay(changes, names, until=stopped, since=stopped)
    assert not overlaps, overlaps
    # the four handed over were given back, each stopped once: none counts as lost
    handed = [(change, name) for at, instance, change, name in sorted(changes) if instance == "a" and at < stopped
              and change != "gain"]
    assert sorted(handed) == sorted(("lose", name) for name in taken_by_b), handed
