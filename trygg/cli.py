"""The `trygg` command (Typer): composes the stages, runs one alone, or administers."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer

from trygg.errors import SettingsError, TryggError
from trygg.logging import configure_logging
from trygg.registry import RegistryError, parse_registry
from trygg.settings import Settings, load_settings

app = typer.Typer(
    name="trygg",
    help="Trygg: safety alarms and sensors for home care, from device to staff in milliseconds.",
    no_args_is_help=True,
    add_completion=False,
)
registry_app = typer.Typer(help="The registry of teams, residents, devices and users.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"trygg: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    """Settings from the environment; a bad one stops the program with one line."""
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
    from storage import MigrationError, migrate
    from trygg.runtime import resolve_database

    settings = settings_or_exit()
    try:
        applied = migrate(resolve_database(settings))
    except (MigrationError, psycopg.OperationalError) as exc:
        fail(str(exc).strip(), 1)
    typer.echo("applied: " + ", ".join(applied) if applied else "database is up to date")


@registry_app.command("load")
def registry_load(
    file: Annotated[Path, typer.Argument(help="registry document, YAML or JSON")],
) -> None:
    """Validate FILE as a whole and replace the registry with it in one transaction."""
    from storage import migrate, save_registry
    from trygg.runtime import resolve_database

    settings = settings_or_exit()
    try:
        text = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 1)
    try:
        reg = parse_registry(text)
    except RegistryError as exc:
        for line in exc.errors:
            typer.echo(f"{file}: {line}", err=True)
        fail(f"{file}: {len(exc.errors)} error(s); the registry was not changed", 1)
    try:
        conninfo = resolve_database(settings)
        migrate(conninfo)
        with psycopg.connect(conninfo) as conn:
            save_registry(conn, reg, actor="cli")
    except psycopg.Error as exc:
        fail(f"cannot save the registry: {str(exc).strip()}", 1)
    devices = sum(len(r.devices) for r in reg.residents)
    typer.echo(f"registry loaded: {len(reg.teams)} teams, {len(reg.residents)} residents, "
               f"{devices} devices, {len(reg.users)} users")


@app.command()
def gateway() -> None:
    """Run the MQTT gateway alone: validate, store, dead-letter (no rules)."""
    from trygg.runtime import start_ingest

    settings = settings_or_exit()
    try:
        ingest = start_ingest(settings)
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)
    wait_for_signal()
    ingest.stop()


class EventPrinter:
    """Until the console exists: what arrives and what is stored, once a second."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, item: object) -> None:
        kind = getattr(item, "type", None)
        with self._lock:
            self.counts[str(kind) if kind is not None else "status"] += 1

    def report(self, stop: threading.Event) -> None:
        from prometheus_client import REGISTRY

        while not stop.wait(1.0):
            with self._lock:
                counts, self.counts = self.counts, Counter()
            stored = REGISTRY.get_sample_value("trygg_gateway_stored_total") or 0
            dead = sum(
                s.value for m in REGISTRY.collect() if m.name == "trygg_gateway_dead_letters"
                for s in m.samples if s.name.endswith("_total")
            )
            if counts:
                arrived = ", ".join(f"{n} {k}" for k, n in counts.most_common())
                typer.echo(f"arrived: {arrived} | stored in total: {stored:.0f}, "
                           f"dead letters: {dead:.0f}")


@app.command()
def up(
    demo: Annotated[bool, typer.Option("--demo", help="load the demo registry and run "
                                       "the simulated fleet")] = False,
) -> None:
    """Run everything in one process (embedded broker and database when no URLs are set)."""
    from trygg.runtime import start_ingest

    settings = settings_or_exit()
    if not demo:
        try:
            settings.require_real_secrets()
        except SettingsError as exc:
            fail(f"invalid setting {exc}")
    printer = EventPrinter()
    try:
        ingest = start_ingest(settings, sink=printer)
    except (TryggError, psycopg.OperationalError, OSError) as exc:
        fail(str(exc).strip(), 1)
    typer.echo(f"Trygg is running: MQTT {ingest.broker.url}, "
               f"events on {settings.mqtt_prefix}/devices/+/events")
    stop = threading.Event()
    threading.Thread(target=printer.report, args=(stop,), daemon=True).start()
    wait_for_signal()
    stop.set()
    ingest.stop()


def main() -> None:
    app(prog_name="trygg")


if __name__ == "__main__":
    main()
