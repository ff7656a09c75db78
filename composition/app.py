"""`trygg up`: every stage in one process.

The gateway receives on the same asyncio loop as processors and alerts (and the
dashboard, when it is served): a valid event goes through the rules and out as an alert
in the callback that read it. Only making events durable runs on threads of its own.
Start-up order: database (the stages' pool) and migrations, registry, broker, alerts
(restores unresolved alerts), processors (restores rule state from the newest snapshot,
replays the events stored after it, arms heartbeat supervision from when each device was
last heard), the dashboard (listening), the gateway, then maintenance (partitions ahead,
rollups, retention: on a thread and a pool of its own) and the daily insights job (in a
child process: composition/insights.py); "Trygg is running" is said
after that, and nothing slow (an import, building the dashboard) runs on the loop
afterwards. Shutdown runs the other way (`_stop`), every task by the name it was
started under.

The two ports that run against the flow (trygg/pipeline.py) are wired here: the alert
stage tells the processors stage of a resolved alert through `LateAlertClosed` (bound
once both exist), and the gateway asks `OpenEmergencies`, kept from the alert stage's
changes, whether a resident's alarm or fall is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import uvicorn

from alerts import AlertStage, Subscription, SubscriptionDropped
from composition.insights import keep_insights
from composition.maintain import keep_maintained
from composition.runtime import POOL_SPARE, Broker, Ingest, open_database, open_registry, resolve_broker, start_ingest
from processors import Processor, ProcessorStage, StateError, export_states
from storage import Pool, conninfo_of, save_registry
from storage.rule_state import events_since, last_seen, load_rule_state, save_rule_state
from trygg.alert import Alert
from trygg.contract import AlertKind, utcnow
from trygg.logging import get_logger
from trygg.pipeline import AlertClosed, AlertIntent
from trygg.registry import Registry
from trygg.settings import Settings
from trygg.watchdog import watch_task

log = get_logger(__name__)

#: Rule state is saved this often (when something was processed); a restart replays the
#: events stored after the newest snapshot, so a longer interval only means more replay.
SNAPSHOT_INTERVAL_S = 60.0
EMERGENCY_KINDS = frozenset({AlertKind.ALARM.value, AlertKind.FALL.value})


@dataclass
class Services:
    """What `trygg up` runs; the dashboard and the demo take what they need from it."""

    settings: Settings
    #: the stages' connections (storage/__init__.py); closed by `serve` at the end
    pool: Pool
    broker: Broker
    registry: Registry
    processor: Processor
    processors: ProcessorStage
    alerts: AlertStage
    emergencies: OpenEmergencies
    ingest: Ingest | None = None
    on_registry: list[Callable[[Registry], None]] = field(default_factory=list)
    #: set on SIGINT/SIGTERM: tasks that must finish cleanly (the dashboard) wait for it
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: the dashboard's address, bound before anything started (composition/runtime.py
    #: `bind_http`), so that no other program can take it in between; None: uvicorn binds
    http_socket: socket.socket | None = None


class LateAlertClosed:
    """The `AlertClosed` port the alert stage is built with, passed on to the processors
    stage, which is built after it (it needs the alert stage's `on_intents`). `build`
    binds it before either stage runs; nothing can be resolved before that."""

    def __init__(self) -> None:
        self._rules: AlertClosed | None = None

    def bind(self, rules: AlertClosed) -> None:
        self._rules = rules

    def alert_closed(self, resident_id: str, kind: AlertKind, device_id: str | None) -> None:
        if self._rules is None:
            raise RuntimeError("an alert was closed before the processors stage was built")
        self._rules.alert_closed(resident_id, kind, device_id)


class OpenEmergencies:
    """The gateway's `EmergencyState` in `trygg up`: residents with an open or acknowledged
    alarm or fall alert, kept from the alert stage's changes by `run` (a task of
    `serve`). Their positions are used even without a location basis (docs/privacy.md).
    Asked from the gateway's receiving thread: one look-up in a set. `open` subscribes and
    takes the alerts active now; `serve` calls it before the gateway reads."""

    def __init__(self, alerts: AlertStage) -> None:
        self._alerts = alerts
        self._residents: set[str] = set()
        self._subscription: Subscription | None = None

    def emergency_open(self, resident_id: str) -> bool:
        return resident_id in self._residents

    def open(self) -> None:
        self.close()
        self._subscription = self._alerts.subscribe()  # first: no change falls between
        self._residents = {a.resident_id for a in self._alerts.active() if a.kind in EMERGENCY_KINDS}

    def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            self._alerts.unsubscribe(subscription)

    async def run(self) -> None:
        try:
            while True:
                if self._subscription is None:
                    self.open()
                assert self._subscription is not None
                try:
                    while True:
                        self.note(await self._subscription.get())
                except SubscriptionDropped:  # more changes at once than it holds: start again
                    log.warning("emergency_state_resubscribed")
                    self.close()
        finally:
            self.close()

    def note(self, alert: Alert) -> None:
        """One alert as it is now."""
        if alert.kind not in EMERGENCY_KINDS:
            return
        resident = alert.resident_id
        if alert.active:
            self._residents.add(resident)
        elif not any(a.resident_id == resident and a.kind in EMERGENCY_KINDS
                     for a in self._alerts.active()):
            self._residents.discard(resident)


def restore_rules(processor: Processor, pool: Pool, on_intents: Callable[[list[AlertIntent]], None]) -> None:
    """Newest snapshot, then the events stored after it, then heartbeat supervision."""
    now = utcnow()
    snapshot = load_rule_state(pool)
    since = now - timedelta(minutes=5)
    if snapshot is not None:
        saved_at, state = snapshot
        try:
            processor.restore_state(state)
            since = saved_at
        except StateError as exc:
            log.warning("rule_state_snapshot_not_usable_rebuilding", error=str(exc))
    replayed = 0
    for event in events_since(pool, since, now):
        intents = processor.handle(event, event.received_at)
        if intents:
            on_intents(intents)  # alerts ignore what they already know (deterministic ids)
        replayed += 1
    processor.start_supervision(now, last_seen(pool))
    log.info("rule_state_restored", from_snapshot=snapshot is not None, events_replayed=replayed)


async def build(settings: Settings, *, demo_registry: Registry | None = None) -> Services:
    pool = await asyncio.to_thread(open_database, settings, settings.ingest_writers + POOL_SPARE)
    try:
        if demo_registry is not None:
            def load_demo() -> None:
                with pool.connection() as conn:
                    save_registry(conn, demo_registry, actor="demo")

            await asyncio.to_thread(load_demo)
        registry = await asyncio.to_thread(open_registry, pool, settings)
        broker = await asyncio.to_thread(resolve_broker, settings)
    except BaseException:
        await asyncio.to_thread(pool.close)
        raise
    processor = Processor(registry, offline_debounce=timedelta(seconds=settings.offline_debounce_s))
    # The one cycle between the stages: alerts → rules (a resolved alert re-arms them)
    # against rules → alerts (intents). The alert stage gets a port bound just below.
    rules = LateAlertClosed()
    alerts = AlertStage.from_settings(settings, registry, broker.address, protocol=broker.protocol,
                                      pool=pool, alert_closed=rules)
    stage = ProcessorStage(processor, alerts.on_intents)
    rules.bind(stage)
    return Services(settings, pool, broker, registry, processor, stage, alerts, OpenEmergencies(alerts))


def _freeze_startup_objects() -> None:
    """Keep what start-up built (registry, rule state, restored alerts) out of the
    garbage collector's full passes: scanning it took 90–200 ms of the loop at a time,
    an alarm's p99 (docs/design-notes.md). Reference counting still frees it."""
    gc.collect()
    gc.freeze()
    log.debug("start_up_objects_frozen_for_garbage_collector", objects=gc.get_freeze_count())


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
        save_rule_state(services.pool, now, export_states(states))

    try:
        await asyncio.to_thread(save)
    except psycopg.Error as exc:
        log.warning("rule_state_snapshot_not_saved", error=str(exc).strip())


@dataclass
class _Tasks:
    """The tasks `serve` starts, each by name, so that they are stopped in order."""

    alerts: asyncio.Task[None]
    processors: asyncio.Task[None]
    emergencies: asyncio.Task[None]
    snapshots: asyncio.Task[None]
    #: partitions ahead, retention, rollups (composition/maintain.py), started after the gateway
    maintenance: asyncio.Task[None] | None = None
    #: the daily features and notices (composition/insights.py), in a child process of its own
    insights: asyncio.Task[None] | None = None
    #: ends by itself once `Services.stopping` is set (live streams get a `reset`)
    dashboard: asyncio.Task[None] | None = None
    extra: list[asyncio.Task[None]] = field(default_factory=list)


async def serve(
    settings: Settings,
    *,
    demo_registry: Registry | None = None,
    dashboard: Callable[[str], None] | None = None,
    extra: Callable[[Services], list[Coroutine[Any, Any, None]]] | None = None,
    started: Callable[[Services], None] | None = None,
    http_socket: socket.socket | None = None,
) -> None:
    """Run every stage until SIGINT/SIGTERM. With `dashboard` the dashboard is served
    too (on `http_socket` when given) and its URL handed to that callable; `extra` adds
    tasks (the demo's)."""
    services = await build(settings, demo_registry=demo_registry)
    services.http_socket = http_socket
    try:
        await _run(services, dashboard, extra, started)
    finally:
        await asyncio.to_thread(services.pool.close)


async def _run(
    services: Services,
    dashboard: Callable[[str], None] | None,
    extra: Callable[[Services], list[Coroutine[Any, Any, None]]] | None,
    started: Callable[[Services], None] | None,
) -> None:
    settings = services.settings
    loop = asyncio.get_running_loop()
    stopping = services.stopping
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    await asyncio.to_thread(restore_rules, services.processor, services.pool, services.alerts.on_intents)
    if dashboard is not None:
        # Importing the dashboard takes more than a second of CPU: done here, on a worker
        # thread before the gateway reads, never on the loop once alarms flow.
        await asyncio.to_thread(importlib.import_module, "dashboard")

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
            def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
                return watch_task(group.create_task(coro, name=name), stopping.is_set)

            alerts = start(services.alerts.run(), "alerts")
            processors = start(services.processors.run(), "processors")
            await services.alerts.wait_ready()
            served: asyncio.Task[None] | None = None
            if dashboard is not None:  # listening before the gateway reads: its start-up is not cheap
                listening = asyncio.Event()
                served = start(serve_dashboard(services, dashboard, listening), "dashboard")
                await _until_set(listening, served)
            services.emergencies.open()  # before the gateway reads a position
            services.ingest = await asyncio.to_thread(
                start_ingest, settings, services.pool, services.processors.sink, services.broker,
                services.emergencies, services.registry, loop)
            services.ingest.listeners.append(on_registry)
            tasks = _Tasks(alerts, processors, start(services.emergencies.run(), "emergencies"),
                           start(_snapshots(services), "snapshots"), served)
            # Maintenance runs on a thread and a pool of its own; the task only waits. Watched
            # like the others: without it no partition is made ahead and the disk fills.
            tasks.maintenance = start(keep_maintained(settings, conninfo_of(services.pool)), "maintenance")
            if settings.insights_enabled:  # each pass in a child process; the task only waits
                tasks.insights = start(keep_insights(settings, conninfo_of(services.pool)), "insights")
            tasks.extra = [start(coro, getattr(coro, "__name__", "extra"))
                           for coro in (extra(services) if extra else [])]
            _freeze_startup_objects()
            if started is not None:
                started(services)
            await stopping.wait()
            await _stop(services, tasks)
    finally:
        if services.ingest is not None:
            await asyncio.to_thread(services.ingest.stop_gateway)
        if services.broker.embedded is not None:
            services.broker.embedded.stop()
        log.info("trygg_stopped")


async def _until_set(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait for `event`, or for `task` to end without setting it."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiting, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


async def _stop(services: Services, tasks: _Tasks) -> None:
    """Shutdown, the start-up order reversed: what reads the stages first, then the
    gateway (drained and acknowledged), the rules (and their last snapshot), the alerts.
    The dashboard is not cancelled: it ends by itself, and the task group waits for it."""
    await asyncio.sleep(0)  # let the dashboard begin its graceful shutdown
    for task in (*tasks.extra, tasks.snapshots, tasks.emergencies):
        task.cancel()
    if tasks.maintenance is not None:  # ends after the step in progress (the task group waits)
        tasks.maintenance.cancel()
    if tasks.insights is not None:  # the pass ends after its batch in progress (the task group waits)
        tasks.insights.cancel()
    ingest, services.ingest = services.ingest, None
    if ingest is not None:
        await asyncio.to_thread(ingest.stop_gateway)
    tasks.processors.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tasks.processors
    await _save_snapshot(services)
    tasks.alerts.cancel()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside `trygg up`'s loop: the process's own signal handling stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_dashboard(services: Services, announce: Callable[[str], None],
                          listening: asyncio.Event | None = None) -> None:
    """The dashboard on TRYGG_HTTP_HOST:TRYGG_HTTP_PORT (port 0: any free port), in this
    loop, so its alert routes call the alert stage directly. `serve` has imported the
    dashboard already, on a worker thread."""
    from dashboard import StageAlerts

    def broker_state() -> bool:
        ingest = services.ingest
        return ingest is not None and ingest.gateway.connected.is_set()

    def db_state() -> bool:
        ingest = services.ingest
        return ingest is not None and ingest.gateway.database_ok

    await serve_http(services.settings, conninfo_of(services.pool), StageAlerts(services.alerts),
                     broker_state, db_state, services.stopping, announce, listening, services.http_socket)


async def serve_http(settings: Settings, conninfo: str, alerts: Any, broker_state: Callable[[], bool],
                     db_state: Callable[[], bool], stopping: asyncio.Event, announce: Callable[[str], None],
                     listening: asyncio.Event | None = None, http_socket: socket.socket | None = None) -> None:
    """The dashboard with `alerts` (its AlertsPort) served in this loop until `stopping`
    is set. Its two pools (staff's and research's) are opened here and closed when it has
    stopped. `listening` is set once it accepts connections (or has failed to start)."""
    from dashboard import create_app, open_pools

    async with open_pools(settings, conninfo) as pools:
        app = create_app(settings, conninfo, alerts, pools=pools, broker_state=broker_state, db_state=db_state)
        server = _EmbeddedServer(_server_config(app, settings))
        sockets = [http_socket] if http_socket is not None else None
        task = asyncio.create_task(server.serve(sockets), name="dashboard.http")
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.05)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            announce(f"http://{settings.http_host}:{port}/")
        if listening is not None:
            listening.set()
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        state = getattr(app.state, "trygg", None)
        if state is not None:
            state.closing.set()  # live streams end with a `reset`; consoles show it and reconnect
        await asyncio.sleep(0.1)
        server.should_exit = True
        await task
        stop.cancel()


async def serve_dashboard_alone(settings: Settings, conninfo: str) -> None:
    """`trygg dashboard`: the dashboard without the stages (alerts read from the
    database), its pools opened here; uvicorn stops it on SIGINT/SIGTERM."""
    from dashboard import create_app, open_pools

    async with open_pools(settings, conninfo) as pools:
        await uvicorn.Server(_server_config(create_app(settings, conninfo, pools=pools), settings)).serve()


def _server_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                          access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                          proxy_headers=bool(settings.trusted_proxy_list),
                          forwarded_allow_ips=settings.trusted_proxy_list)
