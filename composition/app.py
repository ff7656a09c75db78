"""`trygg up`: every stage in one process.

The gateway receives on the same asyncio loop as processors and alerts (and the
dashboard, when it is served): a valid event goes through the rules and out as an alert
in the callback that read it. Only making events durable runs on threads of its own.
Start-up order: database and migrations, registry, broker, alerts (restores unresolved
alerts), processors (restores rule state from the newest snapshot, replays the events
stored after it, arms heartbeat supervision from when each device was last heard), then
the gateway. Shutdown runs the other way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import uvicorn

from alerts import AlertStage
from composition.runtime import Broker, Ingest, open_registry, resolve_broker, resolve_database, start_ingest
from processors import Processor, ProcessorStage, StateError, export_states
from storage import migrate
from storage.rule_state import events_since, last_seen, load_rule_state, save_rule_state
from trygg.alert import Alert
from trygg.contract import AlertKind, utcnow
from trygg.logging import get_logger
from trygg.pipeline import AlertIntent
from trygg.registry import Registry
from trygg.settings import Settings
from trygg.watchdog import watch_task

log = get_logger("trygg")

#: Rule state is saved this often (when something was processed); a restart replays the
#: events stored after the newest snapshot, so a longer interval only means more replay.
SNAPSHOT_INTERVAL_S = 60.0
EMERGENCY_KINDS = frozenset({AlertKind.ALARM.value, AlertKind.FALL.value})


@dataclass
class Services:
    """What `trygg up` runs; the dashboard and the demo take what they need from it."""

    settings: Settings
    conninfo: str
    broker: Broker
    registry: Registry
    processor: Processor
    processors: ProcessorStage
    alerts: AlertStage
    ingest: Ingest | None = None
    #: residents with an open or acknowledged alarm/fall alert: their positions are used
    #: even without a location basis (DESIGN.md §7); read from the gateway's thread
    emergencies: set[str] = field(default_factory=set)
    on_registry: list[Callable[[Registry], None]] = field(default_factory=list)
    #: set on SIGINT/SIGTERM: tasks that must finish cleanly (the dashboard) wait for it
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def emergency_open(self, resident_id: str) -> bool:
        return resident_id in self.emergencies


def restore_rules(processor: Processor, conninfo: str, on_intents: Callable[[list[AlertIntent]], None]) -> None:
    """Newest snapshot, then the events stored after it, then heartbeat supervision."""
    now = utcnow()
    snapshot = load_rule_state(conninfo)
    since = now - timedelta(minutes=5)
    if snapshot is not None:
        saved_at, state = snapshot
        try:
            processor.restore_state(state)
            since = saved_at
        except StateError as exc:
            log.warning("rule state snapshot not usable, rebuilding from events", error=str(exc))
    replayed = 0
    for event in events_since(conninfo, since, now):
        intents = processor.handle(event, event.received_at)
        if intents:
            on_intents(intents)  # alerts ignore what they already know (deterministic ids)
        replayed += 1
    processor.start_supervision(now, last_seen(conninfo))
    log.info("rule state restored", from_snapshot=snapshot is not None, events_replayed=replayed)


async def build(settings: Settings, *, demo_registry: Registry | None = None) -> Services:
    conninfo = await asyncio.to_thread(resolve_database, settings)
    applied = await asyncio.to_thread(migrate, conninfo)
    if applied:
        log.info("migrations applied", migrations=applied)
    if demo_registry is not None:
        from storage import save_registry

        def load_demo() -> None:
            with psycopg.connect(conninfo) as conn:
                save_registry(conn, demo_registry, actor="demo")

        await asyncio.to_thread(load_demo)
    registry = await asyncio.to_thread(open_registry, conninfo, settings)
    broker = await asyncio.to_thread(resolve_broker, settings)
    processor = Processor(registry, offline_debounce=timedelta(seconds=settings.offline_debounce_s))
    holder: dict[str, ProcessorStage] = {}

    def alert_closed(resident_id: str, kind: AlertKind | str, device_id: str | None) -> None:
        holder["stage"].alert_closed(resident_id, kind, device_id)

    alerts = AlertStage.from_settings(settings, registry, broker.address, protocol=broker.protocol,
                                      conninfo=conninfo, alert_closed=alert_closed)
    stage = ProcessorStage(processor, alerts.on_intents)
    holder["stage"] = stage
    return Services(settings, conninfo, broker, registry, processor, stage, alerts)


def _freeze_startup_objects() -> None:
    """Keep what start-up built (registry, rule state, restored alerts) out of the
    garbage collector's full passes: scanning it took 90–200 ms of the loop at a time,
    an alarm's p99 (docs/design-notes.md). Reference counting still frees it."""
    gc.collect()
    gc.freeze()
    log.debug("start-up objects frozen for the garbage collector", objects=gc.get_freeze_count())


async def _watch_emergencies(services: Services) -> None:
    subscription = services.alerts.subscribe()
    try:
        for alert in services.alerts.active():
            _note_emergency(services, alert)
        while True:
            change = await subscription.get()
            if change is not None:
                _note_emergency(services, change)
    finally:
        services.alerts.unsubscribe(subscription)


def _note_emergency(services: Services, alert: Alert) -> None:
    if alert.kind not in EMERGENCY_KINDS:
        return
    resident = alert.resident_id
    if alert.active:
        services.emergencies.add(resident)
    elif not any(a.resident_id == resident and a.kind in EMERGENCY_KINDS
                 for a in services.alerts.active()):
        services.emergencies.discard(resident)


async def _snapshots(services: Services) -> None:
    """Save the rule state now and then (restart: snapshot + replay after it)."""
    saved_after = -1
    while True:
        await asyncio.sleep(SNAPSHOT_INTERVAL_S)
        processed = services.processors.processed
        if processed != saved_after:  # an idle system has nothing new to save
            await _save_snapshot(services)
            saved_after = processed


async def _save_snapshot(services: Services) -> None:
    """The states are taken on the loop thread (a cheap list of immutable values) and
    turned into JSON and saved on a worker thread, so the alert path never waits."""
    now = utcnow()
    states = services.processor.states_view()

    def save() -> None:
        save_rule_state(services.conninfo, now, export_states(states))

    try:
        await asyncio.to_thread(save)
    except psycopg.Error as exc:
        log.warning("rule state snapshot not saved (database unavailable)", error=str(exc).strip())


async def serve(
    settings: Settings,
    *,
    demo_registry: Registry | None = None,
    extra: Callable[[Services], list[Coroutine[Any, Any, None]]] | None = None,
    started: Callable[[Services], None] | None = None,
) -> None:
    """Run every stage until SIGINT/SIGTERM; `extra` adds tasks (dashboard, demo)."""
    services = await build(settings, demo_registry=demo_registry)
    loop = asyncio.get_running_loop()
    stopping = services.stopping
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    await asyncio.to_thread(restore_rules, services.processor, services.conninfo, services.alerts.on_intents)

    def on_registry(registry: Registry) -> None:  # the registry watcher's thread
        def apply() -> None:
            services.registry = registry
            services.alerts.set_registry(registry)
            services.processors.set_registry(registry)
            for listener in services.on_registry:
                listener(registry)
        loop.call_soon_threadsafe(apply)

    try:
        async with asyncio.TaskGroup() as group:
            # Every task here must run until `stopping`: if one returns or raises, the
            # process exits for its supervisor to restart it (trygg/watchdog.py).
            alerts_task = watch_task(group.create_task(services.alerts.run(), name="alerts"), stopping.is_set)
            processors_task = watch_task(group.create_task(services.processors.run(), name="processors"),
                                         stopping.is_set)
            await services.alerts.wait_ready()
            services.ingest = await asyncio.to_thread(
                start_ingest, settings, services.processors.sink, services.conninfo, services.broker,
                services.emergency_open, services.registry, loop)
            services.ingest.listeners.append(on_registry)
            helpers = [group.create_task(_watch_emergencies(services), name="emergencies"),
                       group.create_task(_snapshots(services), name="snapshots")]
            helpers += [group.create_task(coro, name=getattr(coro, "__name__", None))
                        for coro in (extra(services) if extra else [])]
            for task in helpers:
                watch_task(task, stopping.is_set)
            if started is not None:
                started(services)
            _freeze_startup_objects()
            await stopping.wait()
            await asyncio.sleep(0)  # let the dashboard begin its graceful shutdown
            for task in helpers:
                if task.get_name() != serve_dashboard.__name__:  # it stops by itself, cleanly
                    task.cancel()
            ingest, services.ingest = services.ingest, None
            await asyncio.to_thread(ingest.stop_gateway)
            processors_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await processors_task
            await _save_snapshot(services)
            alerts_task.cancel()
    finally:
        if services.ingest is not None:
            await asyncio.to_thread(services.ingest.stop_gateway)
        if services.broker.embedded is not None:
            services.broker.embedded.stop()
        log.info("trygg stopped")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside `trygg up`'s loop: the process's own signal handling stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_dashboard(services: Services, announce: Callable[[str], None]) -> None:
    """The dashboard on TRYGG_HTTP_HOST:TRYGG_HTTP_PORT (port 0: any free port), in this
    loop, so its alert routes call the alert stage directly."""
    from dashboard import StageAlerts, create_app

    settings = services.settings

    def broker_state() -> bool:
        ingest = services.ingest
        return ingest is not None and ingest.gateway.connected.is_set()

    def db_state() -> bool:
        ingest = services.ingest
        return ingest is not None and ingest.gateway.database_ok

    app = create_app(settings, services.conninfo, StageAlerts(services.alerts), broker_state=broker_state,
                     db_state=db_state)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                            proxy_headers=bool(settings.trusted_proxy_list),
                            forwarded_allow_ips=settings.trusted_proxy_list)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name="dashboard.http")
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn offers no event)
        await asyncio.sleep(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        announce(f"http://{settings.http_host}:{port}/")
    stop = asyncio.create_task(services.stopping.wait())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    state = getattr(app.state, "trygg", None)
    if state is not None:
        state.closing.set()  # live streams end with a `reset`; consoles show it and reconnect
    await asyncio.sleep(0.1)
    server.should_exit = True
    await task
    stop.cancel()
