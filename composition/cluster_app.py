"""`trygg up --cluster`: one instance of Trygg on a NATS JetStream cluster (docs/cluster.md).

Every instance is the same program. At start it opens the database (migrations, the
registry), connects to the NATS nodes, makes the layout if it is missing
(cluster/layout.py), follows every alert of the cluster (`ClusterAlerts`, the dashboard's
port and the gateway's emergency state), serves the dashboard, and then takes its share
of the partitions through leases (cluster/leases.py `Ownership`):

- `ingest.{p}`: an `IngestPartition` (composition/cluster_ingest.py) validates, hands on
  and stores the events of device partition p;
- `rules.{rp}`: a `ResidentPartition` (composition/cluster_rules.py) runs the rules and
  alerts of resident partition rp.

A partition's work is a task; losing the lease cancels it (the task cleans up). The
task ending by itself while the lease is held, or not ending within `STOP_TIMEOUT_S` of
the cancel, ends the process (trygg/watchdog.py): a supervisor restarts it, and its
leases pass on after `TRYGG_CLUSTER_LEASE_S`.
Maintenance (partitions ahead, retention, rollups) runs in every instance under
PostgreSQL's advisory lock, so once per cluster at a time (composition/maintain.py); so
does the daily insights job, under a lock of its own (composition/insights.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import psycopg
from nats.aio.client import Client as NATS

from cluster import Layout, Leases, ensure_layout
from cluster.layout import ingest_lease, rules_lease, settled
from cluster.leases import Ownership
from composition.app import serve_http
from composition.cluster_ingest import IngestPartition
from composition.cluster_rules import ResidentPartition
from composition.cluster_view import ClusterAlerts
from composition.insights import keep_insights
from composition.maintain import keep_maintained
from composition.runtime import POOL_SPARE, RegistryWatcher, open_database, open_registry
from gateway.dead_letters import DeadLetters
from gateway.validate import Validator
from mqtt import BrokerAddress
from storage import EventStore, Pool, conninfo_of
from trygg.backoff import Backoff
from trygg.errors import SettingsError
from trygg.logging import get_logger
from trygg.registry import Registry
from trygg.settings import Settings
from trygg.watchdog import part_ended, watch_task

log = get_logger(__name__)

#: how often the dashboard's database state is looked at (seconds)
DB_PROBE_S = 5.0
#: how long a partition's task may take to stop when its lease is lost or given back;
#: one that takes longer ends the process (`Instance.lose`)
STOP_TIMEOUT_S = 15.0
#: a partition whose work fails this many times in a row (each run shorter than
#: PARTITION_HEALTHY_S) ends the process
PARTITION_RETRIES = 5
PARTITION_HEALTHY_S = 60.0


def instance_name(settings: Settings) -> str:
    """TRYGG_CLUSTER_INSTANCE, or the host name and process id (letters, digits, - and _)."""
    if settings.cluster_instance:
        return settings.cluster_instance
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:48]


def nats_urls(settings: Settings) -> list[str]:
    if not settings.cluster_nats_urls:
        raise SettingsError("TRYGG_CLUSTER_NATS_URLS", "is needed for the cluster mode (nats://host:4222,...)")
    urls = [u.strip() for u in settings.cluster_nats_urls.split(",") if u.strip()]
    for url in urls:
        if not re.fullmatch(r"(nats|tls)://[^\s/]+", url):
            raise SettingsError("TRYGG_CLUSTER_NATS_URLS", f"{url!r} is not nats://host:port")
    return urls


def mqtt_brokers(settings: Settings, urls: list[str]) -> list[BrokerAddress]:
    """The NATS nodes' MQTT listeners: TRYGG_CLUSTER_MQTT_URLS, else the NATS hosts on 1883."""
    if settings.cluster_mqtt_urls:
        listed = [u.strip() for u in settings.cluster_mqtt_urls.split(",") if u.strip()]
    else:
        listed = [f"mqtt://{u.split('://', 1)[1].rsplit(':', 1)[0]}:1883" for u in urls]
    try:
        return [BrokerAddress.from_url(u) for u in listed]
    except ValueError as exc:
        raise SettingsError("TRYGG_CLUSTER_MQTT_URLS", str(exc)) from None


@dataclass
class Instance:
    """One instance's running parts."""

    settings: Settings
    name: str
    pool: Pool
    registry: Registry
    nc: NATS
    view: ClusterAlerts
    brokers: list[BrokerAddress]
    validator: Validator
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: partition name → its task; `_ending` holds the names being stopped on purpose
    work: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    rules: dict[str, ResidentPartition] = field(default_factory=dict)
    ending: set[str] = field(default_factory=set)
    database_ok: bool = True

    async def gain(self, name: str) -> None:
        task = asyncio.create_task(self._keep(name), name=f"partition.{name}")
        self.work[name] = watch_task(task, lambda: self.stopping.is_set() or name in self.ending)

    def _worker(self, name: str) -> Any:
        kind, _, number = name.partition(".")
        partition = int(number)
        if kind == "ingest":
            return IngestPartition(
                self.nc.jetstream(), partition, validator=self.validator,
                dead_letters=DeadLetters(self.settings.mqtt_prefix), store=EventStore(self.pool),
                prefix=self.settings.mqtt_prefix)
        worker = ResidentPartition(self.nc, partition, settings=self.settings, registry=self.registry,
                                   pool=self.pool, brokers=self.brokers, instance=self.name)
        self.rules[name] = worker
        return worker

    async def _keep(self, name: str) -> None:
        """Run the partition's work while the lease is held. A run that fails (a NATS
        request timing out while a node dies, say) is started again, fresh, with backoff;
        `PARTITION_RETRIES` failures in a row end the task, and so the process (its
        supervisor restarts it, the leases pass on)."""
        backoff = Backoff(0.5, 5.0)
        failures = 0
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._worker(name).run()
                raise RuntimeError("the partition's work ended by itself")
            except Exception:
                log.exception("partition_failed_restarting", partition=name, failures=failures + 1)
            finally:
                self.rules.pop(name, None)
            if asyncio.get_running_loop().time() - started > PARTITION_HEALTHY_S:
                failures = 0
                backoff.reset()
            failures += 1
            if failures >= PARTITION_RETRIES:
                raise RuntimeError(f"partition {name} failed {failures} times in a row")
            await asyncio.sleep(backoff.next())

    def abandon(self, name: str) -> None:
        """The lease of `name` was lost (not given back): its work stops at once, without
        saving what the next owner rebuilds from the streams."""
        worker = self.rules.get(name)
        if worker is not None:
            worker.abandon()

    async def lose(self, name: str) -> None:
        task = self.work.pop(name, None)
        self.rules.pop(name, None)
        if task is None:
            return
        self.ending.add(name)
        try:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(task)
            if not task.done():
                # Still running, it would run beside the partition's next owner: in this
                # instance once the lease comes back (the same MQTT client id, each
                # throwing the other off the nodes), or in another. A restart stops it.
                part_ended(f"partition.{name}", TimeoutError(f"not stopped {STOP_TIMEOUT_S:g} s after its lease went"))
        finally:
            self.ending.discard(name)

    def set_registry(self, registry: Registry) -> None:
        self.registry = registry
        self.validator.set_registry(registry)
        for worker in self.rules.values():
            worker.set_registry(registry)

    async def probe_database(self) -> None:
        def ping() -> bool:
            try:
                with self.pool.connection(timeout=3) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.Error:  # the pool's timeout included
                return False

        while True:
            self.database_ok = await asyncio.to_thread(ping)
            await asyncio.sleep(DB_PROBE_S)


async def serve_cluster(settings: Settings, *, dashboard: Callable[[str], None],
                        started: Callable[[Instance], None], http_socket: socket.socket | None = None) -> None:
    """Run this instance until SIGINT/SIGTERM."""
    urls = nats_urls(settings)
    name = instance_name(settings)
    brokers = mqtt_brokers(settings, urls)
    # A device partition's store and a resident partition's alert writer each hold one
    # connection while the partition is owned; an instance may come to own them all.
    layout = Layout(settings.cluster_replicas)
    pool = await asyncio.to_thread(functools.partial(
        open_database, settings, layout.device_partitions + layout.resident_partitions + POOL_SPARE,
        min_size=POOL_SPARE))
    try:
        registry = await asyncio.to_thread(open_registry, pool, settings)
        nc = await nats.connect(urls, name=f"trygg-{name}", max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                                connect_timeout=2, allow_reconnect=True,
                                error_cb=_nats_error, disconnected_cb=_nats_disconnected,
                                reconnected_cb=_nats_reconnected)
        try:
            await _run(settings, name, pool, registry, nc, brokers, dashboard, started, http_socket)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        await asyncio.to_thread(pool.close)


async def _run(settings: Settings, name: str, pool: Pool, registry: Registry, nc: NATS,
               brokers: list[BrokerAddress], dashboard: Callable[[str], None],
               started: Callable[[Instance], None], http_socket: socket.socket | None) -> None:
    js = nc.jetstream(timeout=5)
    await settled("layout", lambda: ensure_layout(js, Layout(settings.cluster_replicas),
                                                          (brokers[0].host, brokers[0].port)))
    view = ClusterAlerts(nc)
    validator = Validator(registry, settings.mqtt_prefix, emergencies=view)
    instance = Instance(settings, name, pool, registry, nc, view, brokers, validator)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, instance.stopping.set)
    leases = Leases(js, name, ttl_s=settings.cluster_lease_s, replicas=settings.cluster_replicas)
    await settled("leases", leases.open)
    groups = [[ingest_lease(p) for p in range(Layout().device_partitions)],
              [rules_lease(p) for p in range(Layout().resident_partitions)]]
    ownership = Ownership(leases, groups, instance.gain, instance.lose, instance.abandon)

    def on_registry(registry: Registry) -> None:  # the watcher's thread
        loop.call_soon_threadsafe(instance.set_registry, registry)

    watcher = RegistryWatcher(pool, settings, on_registry)

    async with asyncio.TaskGroup() as group:
        def start(coro: Any, task_name: str) -> asyncio.Task[None]:
            return watch_task(group.create_task(coro, name=task_name), instance.stopping.is_set)

        viewing = start(view.run(), "cluster.view")
        await view.wait_ready()
        listening = asyncio.Event()
        served = start(serve_http(settings, conninfo_of(pool), view, lambda: nc.is_connected,
                                  lambda: instance.database_ok, instance.stopping, dashboard, listening,
                                  http_socket), "dashboard")
        await listening.wait()
        probing = start(instance.probe_database(), "database.probe")
        owning = start(ownership.run(), "cluster.ownership")
        watcher.start()
        maintenance = start(keep_maintained(settings, conninfo_of(pool)), "maintenance")
        background = [maintenance]
        if settings.insights_enabled:  # under its own advisory lock: once per cluster at a time
            background.append(start(keep_insights(settings, conninfo_of(pool)), "insights"))
        started(instance)
        log.info("cluster_instance_running", instance=name, nats=nc.connected_url.netloc if nc.connected_url else None)
        await instance.stopping.wait()
        # Stop in order: the partitions are given back (each stopped cleanly, its lease
        # released at once so another instance takes it now, not after the TTL), then
        # what reads and serves.
        watcher.stop()
        owning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await owning
        for task in (*background, probing, viewing):
            task.cancel()
        await served
    log.info("trygg_stopped", instance=name)


async def _nats_error(exc: Exception) -> None:
    log.warning("nats_error", error=f"{type(exc).__name__}: {exc}")


async def _nats_disconnected() -> None:
    log.warning("nats_disconnected")


async def _nats_reconnected() -> None:
    log.info("nats_reconnected")
