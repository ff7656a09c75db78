"""The `trygg` command (Typer): composes the stages, runs one alone, or administers."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Coroutine
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import psycopg
import typer

from trygg.errors import SettingsError, TryggError
from trygg.logging import configure_logging
from trygg.registry import RegistryError, RegistryLimitError, parse_registry
from trygg.registry_limits import MIB, DocumentLimits, LimitExceeded, check_size
from trygg.settings import Settings, load_settings

if TYPE_CHECKING:
    from composition.app import Services

app = typer.Typer(
    name="trygg",
    help="Trygg: safety alarms and sensors for home care, from device to staff in milliseconds.",
    no_args_is_help=True,
    add_completion=False,
)
registry_app = typer.Typer(help="The registry of teams, residents, devices and users.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")


def _register_commands() -> None:
    from composition.insights import register as register_insights
    from composition.maintain import register as register_maintain
    from composition.users_cli import register as register_users
    from simulators import register as register_simulate

    register_simulate(app)
    register_users(app)
    register_maintain(app)
    register_insights(app)


_register_commands()


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"trygg: {message}", err=True)
    raise typer.Exit(code)


#: An alarm crosses three threads (MQTT receive, the rules' loop, the MQTT writer); with
#: CPython's default 5 ms GIL switch interval a busy database writer thread could hold
#: each hop for that long (docs/design-notes.md).
GIL_SWITCH_INTERVAL_S = 0.0005


def settings_or_exit(**overrides: object) -> Settings:
    """Settings from the environment; a bad one stops the program with one line."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        fail(f"invalid setting {exc}")
    configure_logging(settings.log_level, settings.log_format)
    return settings


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(package_version("trygg"))


@app.command(name="migrate")
def migrate_command() -> None:
    """Apply the database migrations (embedded PostgreSQL when no TRYGG_DATABASE_URL)."""
    from composition.runtime import apply_migrations, open_pool, resolve_database
    from storage import MigrationError
    from storage.errors import EngineError

    settings = settings_or_exit()
    try:
        conninfo = resolve_database(settings)
        with open_pool(conninfo, 1) as pool:
            applied = apply_migrations(pool, conninfo, settings)
    except (MigrationError, EngineError, psycopg.OperationalError) as exc:
        fail(str(exc).strip(), 1)
    typer.echo("applied: " + ", ".join(applied) if applied else "database is up to date")


@registry_app.command("load")
def registry_load(
    file: Annotated[Path, typer.Argument(help="registry document, YAML or JSON")],
) -> None:
    """Validate FILE as a whole and replace the registry with it in one transaction."""
    from composition.runtime import open_database
    from storage import save_registry

    settings = settings_or_exit()
    limits = DocumentLimits(max_bytes=settings.registry_max_mb * MIB)
    try:
        check_size(file.stat().st_size, limits)  # a file too large is refused before it is read
        text = file.read_bytes()
        reg = parse_registry(text, limits)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 1)
    except (LimitExceeded, RegistryLimitError) as exc:  # one line: the limit it passed
        fail(f"{file}: {exc.message}; the registry was not changed", 1)
    except RegistryError as exc:
        for line in exc.errors:
            typer.echo(f"{file}: {line}", err=True)
        fail(f"{file}: {len(exc.errors)} error(s); the registry was not changed", 1)
    try:
        with open_database(settings, 1) as pool, pool.connection() as conn:
            save_registry(conn, reg, actor="cli")
    except psycopg.Error as exc:
        fail(f"cannot save the registry: {str(exc).strip()}", 1)
    devices = sum(len(r.devices) for r in reg.residents)
    typer.echo(f"registry loaded: {len(reg.teams)} teams, {len(reg.residents)} residents, "
               f"{devices} devices, {len(reg.users)} users")


@app.command()
def processors() -> None:
    """Run the rules alone: intents go to the alerts process over the broker."""
    from composition.stages import run_processors

    settings = settings_or_exit()
    try:
        asyncio.run(run_processors(settings))
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)


@app.command()
def alerts() -> None:
    """Run the alert stage alone: lifecycle, escalation, delivery."""
    from composition.stages import run_alerts

    settings = settings_or_exit()
    try:
        asyncio.run(run_alerts(settings))
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)


@app.command()
def dashboard() -> None:
    """Serve the dashboard alone (alerts read from the database; acting on them needs `trygg up`)."""
    from composition.app import serve_dashboard_alone
    from composition.runtime import open_database
    from storage import conninfo_of

    settings = settings_or_exit()
    try:
        settings.require_real_secrets()
        with open_database(settings, 1) as pool:  # migrated before the dashboard's pools open
            conninfo = conninfo_of(pool)
    except SettingsError as exc:
        fail(f"invalid setting {exc}")
    except psycopg.OperationalError as exc:
        fail(str(exc).strip(), 1)
    asyncio.run(serve_dashboard_alone(settings, conninfo))


@app.command()
def gateway() -> None:
    """Run the MQTT gateway alone: validate, store, dead-letter (no rules)."""
    from composition.runtime import POOL_SPARE, open_database, start_ingest

    settings = settings_or_exit()
    try:
        pool = open_database(settings, settings.ingest_writers + POOL_SPARE)
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)
    try:
        try:
            ingest = start_ingest(settings, pool)
        except (TryggError, psycopg.OperationalError, OSError) as exc:
            fail(str(exc).strip(), 1)
        wait_for_signal()
        ingest.stop()
    finally:
        pool.close()


def print_alerts(services: Services) -> Coroutine[Any, Any, None]:
    """Until the console is served: each alert change as one line on the terminal."""

    async def run() -> None:
        subscription = services.alerts.subscribe()
        try:
            while True:
                alert = await subscription.get()
                if alert is None:
                    continue
                level = alert.escalation_level
                typer.echo(f"{alert.updated_at:%H:%M:%S}  {alert.state:<12} {alert.priority:<8} "
                           f"{alert.kind:<15} resident {alert.resident_id:<8} team {alert.team_id}"
                           + (f"  escalated x{level}" if level else ""))
        finally:
            services.alerts.unsubscribe(subscription)

    return run()


def run_demo_fleet(services: Services) -> Coroutine[Any, Any, None]:
    """The simulated municipality of the demo registry, publishing to Trygg's broker."""
    from simulators import MqttTarget, demo_fleet, run_fleet

    async def run() -> None:
        stop = threading.Event()
        try:
            await asyncio.to_thread(run_fleet, demo_fleet(), MqttTarget.parse(services.broker.url),
                                    services.settings.mqtt_prefix, stop=stop, offline_on_exit=False)
        finally:
            stop.set()

    return run()


@app.command()
def up(
    demo: Annotated[bool, typer.Option("--demo", help="load the demo registry and run "
                                       "the simulated fleet")] = False,
    cluster: Annotated[bool, typer.Option("--cluster", help="run as one instance of a cluster on NATS "
                                          "JetStream (TRYGG_CLUSTER_NATS_URLS; docs/cluster.md)")] = False,
) -> None:
    """Run everything in one process (embedded broker and database when no URLs are set)."""
    from composition.app import serve
    from composition.runtime import bind_http, hold_data_dir

    settings = settings_or_exit()
    if cluster or settings.cluster_nats_urls:
        if demo:
            fail("--demo runs on one machine; for a cluster to try, see scripts/cluster (docs/cluster.md)")
        up_cluster(settings)
        return
    if not demo:
        try:
            settings.require_real_secrets()
        except SettingsError as exc:
            fail(f"invalid setting {exc}")
    try:  # before anything starts: one line, not a failure after "Trygg is running"
        hold_data_dir(settings.data_dir)  # held until this process ends
        http_socket = bind_http(settings)  # served by the dashboard once it starts
    except (TryggError, OSError) as exc:
        fail(str(exc), 1)
    demo_registry = None
    if demo:
        from composition.demo import demo_settings
        from simulators import demo_registry as make_demo_registry

        demo_registry = make_demo_registry()
        settings = demo_settings(settings)

    def extra(services: Services) -> list[Coroutine[Any, Any, None]]:
        tasks = [print_alerts(services)]
        if demo:
            from composition.demo import demo_tasks

            tasks += [run_demo_fleet(services), *demo_tasks(services)]
        return tasks

    def started(services: Services) -> None:
        moved = services.broker.port_moved_from
        typer.echo(f"Trygg is running: MQTT {services.broker.url}"
                   + (f" (port {moved} of the last start is taken)" if moved else "")
                   + f", events on {settings.mqtt_prefix}/devices/+/events, "
                   f"alerts on {settings.mqtt_prefix}/teams/+/alerts/+")
        if demo and demo_registry is not None:
            from composition.demo import DEMO_PASSWORD, set_demo_passwords, timeouts_line

            users = set_demo_passwords(services.pool, demo_registry)
            typer.echo(f"Demo users (password {DEMO_PASSWORD}): " + "; ".join(users))
            typer.echo(timeouts_line(settings))

    try:
        asyncio.run(serve(settings, demo_registry=demo_registry, extra=extra, started=started,
                          dashboard=lambda url: typer.echo(f"dashboard {url}", err=False),
                          http_socket=http_socket))
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)


def up_cluster(settings: Settings) -> None:
    """`trygg up --cluster`: this instance of the cluster, until SIGINT/SIGTERM."""
    from composition.cluster_app import Instance, mqtt_brokers, nats_urls, serve_cluster
    from composition.runtime import bind_http, hold_data_dir

    try:
        settings.require_real_secrets()
        if settings.database_url is None:
            raise SettingsError("TRYGG_DATABASE_URL", "is needed for the cluster mode (every instance uses it)")
        brokers = mqtt_brokers(settings, nats_urls(settings))
    except SettingsError as exc:
        fail(f"invalid setting {exc}")
    try:
        hold_data_dir(settings.data_dir)
        http_socket = bind_http(settings)
    except (TryggError, OSError) as exc:
        fail(str(exc), 1)

    def started(instance: Instance) -> None:
        typer.echo(f"Trygg is running: cluster instance {instance.name}, NATS {settings.cluster_nats_urls}, "
                   f"MQTT {', '.join(f'{b.host}:{b.port}' for b in brokers)}, events on "
                   f"{settings.mqtt_prefix}/devices/+/events, alerts on {settings.mqtt_prefix}/teams/+/alerts/+")

    try:
        asyncio.run(serve_cluster(settings, dashboard=lambda url: typer.echo(f"dashboard {url}"),
                                  started=started, http_socket=http_socket))
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)


def main() -> None:
    app(prog_name="trygg")


if __name__ == "__main__":
    main()
