"""`trygg simulate`: the fleet, load and scenario modes on the command line.

Register it in the main CLI with `simulators.cli.register(app)`; `python -m simulators`
runs it alone.

    trygg simulate --residents 50 --speed 60 --seed 1 --duration 600 --registry-out fleet.yaml
    trygg simulate --rate 5000 --count 1000000 --registry-out load.yaml      # load mode
    trygg simulate --scenario night_wandering --speed 10                     # scenario mode
    trygg simulate --residents 3 --duration 60 --speed 600 --dry-run         # print, no broker
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console

from simulators.clock import check_start, default_start
from simulators.connections import MqttTarget
from simulators.errors import SimulatorError
from simulators.fleet import Fleet
from simulators.load import run_load
from simulators.publisher import run_fleet, run_scenario
from simulators.registry_gen import DEMO_SEED, load_registry, write_registry
from simulators.report import RunStats, progress, summary_table
from simulators.scenarios import list_scenarios, load_scenario
from simulators.wire import from_ms

DEFAULT_URL = "mqtt://127.0.0.1:1883"


def _settings_defaults() -> tuple[str, str]:
    """The broker URL and prefix from TRYGG_* settings, when they are set."""
    try:
        from trygg.settings import load_settings

        settings = load_settings()
        return settings.mqtt_url or DEFAULT_URL, settings.mqtt_prefix
    except Exception:  # a bad unrelated setting must not stop a simulator
        return DEFAULT_URL, "trygg/v1"


def simulate(
    residents: int = typer.Option(50, min=1, help="Fleet size (fleet mode); devices (load mode)."),
    speed: float = typer.Option(1.0, min=0.001, help="Simulated seconds per real second."),
    seed: int = typer.Option(
        DEMO_SEED, help="Same seed, residents and start: the same stream. The default seed "
        "with 50 residents is the demo registry."),
    duration: float | None = typer.Option(
        None, min=0, help="Real seconds to run; none = until the stream ends or Ctrl-C."),
    start: datetime | None = typer.Option(
        None, formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
        help="Simulated start (with UTC offset); default: so that the run ends at now."),
    max_lead_hours: float = typer.Option(
        0.0, min=0, max=23, help="How far the simulated clock may run ahead of the wall clock."),
    incident_rate: float = typer.Option(
        1.0, min=0, help="Multiplies the daily chance of falls, alarms, smoke, wandering."),
    registry_out: Path | None = typer.Option(
        None, help="Write the registry of the simulated devices (YAML) here first."),
    rate: float | None = typer.Option(
        None, min=0, help="Load mode: events per second (0 = as fast as possible)."),
    count: int | None = typer.Option(None, min=1, help="Load mode: stop after this many events."),
    scenario: str | None = typer.Option(
        None, help=f"Scenario mode: a name ({', '.join(list_scenarios())}) or a YAML path."),
    mqtt_url: str | None = typer.Option(None, help=f"Broker (default TRYGG_MQTT_URL or {DEFAULT_URL})."),
    prefix: str | None = typer.Option(None, help="Topic prefix (default TRYGG_MQTT_PREFIX or trygg/v1)."),
    connections: int | None = typer.Option(
        None, min=1, help="MQTT connections shared by the devices (default: fleet 4, load 1)."),
    inflight: int = typer.Option(100, min=1, help="Unacknowledged QoS 1 messages per connection."),
    offline_on_exit: bool = typer.Option(True, help="Fleet mode: publish `offline` for every device at the end."),
    dry_run: bool = typer.Option(False, help="Print the stream as JSON lines instead of publishing."),
) -> None:
    """Simulate residents' devices over MQTT: a fleet, a load test, or a scripted scenario."""
    console = Console(stderr=True)
    url_default, prefix_default = _settings_defaults()
    url, topic_prefix = mqtt_url or url_default, prefix or prefix_default
    try:
        if scenario is not None:
            stats = _scenario_mode(console, scenario, speed, registry_out, url, topic_prefix,
                                   dry_run)
        elif rate is not None:
            stats = _load_mode(console, residents, rate, count, duration, registry_out, url,
                               topic_prefix, connections or 1, inflight)
        else:
            stats = _fleet_mode(console, residents, speed, seed, duration, start,
                                max_lead_hours, incident_rate, registry_out, url, topic_prefix,
                                connections or 4, inflight, offline_on_exit, dry_run)
    except SimulatorError as exc:
        console.print(f"[red]trygg simulate:[/red] {exc}")
        raise typer.Exit(1) from None
    if stats is not None:
        Console().print(summary_table(stats))


def _fleet_mode(
    console: Console, residents: int, speed: float, seed: int, duration: float | None,
    start: datetime | None, max_lead_hours: float, incident_rate: float,
    registry_out: Path | None, url: str, prefix: str, connections: int, inflight: int,
    offline_on_exit: bool, dry_run: bool,
) -> RunStats | None:
    now = datetime.now(UTC)
    max_lead = timedelta(hours=max_lead_hours)
    if start is None:
        start = default_start(now, speed, duration)
    elif not dry_run:
        check_start(start, now, max_lead)
    fleet = Fleet(seed, residents, start, incident_rate=incident_rate)
    if registry_out is not None:
        write_registry(fleet.registry(), registry_out)
        console.print(f"registry of {residents} residents written to {registry_out}")
    if duration == 0:
        return None
    if dry_run:
        span = timedelta(seconds=speed * (duration if duration is not None else 3600))
        _print_stream(fleet, start + span, prefix)
        return None
    console.print(f"fleet: {residents} residents, seed {seed}, simulated start "
                  f"{start.isoformat(timespec='seconds')}, speed {speed:g} -> {url}")
    stop = threading.Event()
    stats = RunStats(mode="fleet")
    with progress(console, stats) as on_progress:
        try:
            stats = run_fleet(fleet, MqttTarget.parse(url), prefix, speed=speed,
                              duration_s=duration, max_lead=max_lead, connections=connections,
                              window=inflight, offline_on_exit=offline_on_exit, stop=stop,
                              on_progress=on_progress)
        except KeyboardInterrupt:
            stop.set()
    return stats


def _print_stream(fleet: Fleet, until: datetime, prefix: str) -> None:
    out = sys.stdout
    for msg in fleet.messages(until=until):
        line = {"at": from_ms(msg.at_ms).isoformat(timespec="milliseconds"),
                "topic": msg.topic(prefix), "payload": msg.payload.decode()}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")


def _load_mode(
    console: Console, residents: int, rate: float, count: int | None, duration: float | None,
    registry_out: Path | None, url: str, prefix: str, connections: int, inflight: int,
) -> RunStats:
    if registry_out is not None:
        write_registry(load_registry(residents), registry_out)
        console.print(f"load registry ({residents} residents, {2 * residents} devices) "
                      f"written to {registry_out}")
    what = "as fast as possible" if rate == 0 else f"{rate:g} events/s"
    console.print(f"load: {what}, {2 * residents} devices, {connections} connection(s) -> {url}")
    stop = threading.Event()
    stats = RunStats(mode="load")
    with progress(console, stats) as on_progress:
        try:
            stats = run_load(MqttTarget.parse(url), prefix, rate=rate or None, count=count,
                             duration_s=duration, residents=residents, connections=connections,
                             window=inflight, stop=stop, on_progress=on_progress)
        except KeyboardInterrupt:
            stop.set()
    return stats


def _scenario_mode(
    console: Console, name: str, speed: float, registry_out: Path | None, url: str,
    prefix: str, dry_run: bool,
) -> RunStats | None:
    sc = load_scenario(name)
    if registry_out is not None:
        write_registry(sc.registry, registry_out)
        console.print(f"scenario registry written to {registry_out} (load it before playing)")
    t0 = sc.latest_start(datetime.now(UTC))
    if dry_run:
        for msg in sc.messages(t0):
            print(json.dumps({"at": from_ms(msg.at_ms).isoformat(timespec="milliseconds"),
                              "topic": msg.topic(prefix), "payload": msg.payload.decode()},
                             ensure_ascii=False))
        return None
    console.print(f"scenario {sc.name}: {len(sc.steps)} messages over {sc.duration_s:g} s "
                  f"simulated from {t0.isoformat(timespec='seconds')}, speed {speed:g} -> {url}")
    stats = RunStats(mode=f"scenario {sc.name}")
    with progress(console, stats) as on_progress:
        stats = run_scenario(sc, MqttTarget.parse(url), prefix, speed=speed, t0=t0,
                             on_progress=on_progress)
    def plural(n: int) -> str:
        return f" ({n} event{'s' if n != 1 else ''})"

    expected = ", ".join(f"{e.kind} {e.state}" + (plural(e.event_count) if e.event_count else "")
                         for e in sc.expect)
    console.print(f"staff should now see: {expected or 'no alerts'}")
    return stats


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to a Typer app (the `trygg` CLI)."""
    app.command("simulate")(simulate)


def main() -> None:
    """`python -m simulators ...`: the command on its own."""
    app = typer.Typer(add_completion=False)
    app.command()(simulate)
    app()


__all__ = ["main", "register", "simulate"]
