"""Maintenance (storage/maintenance.py) as `trygg maintain` and as a task of `trygg up`.

- `trygg maintain`: one run against TRYGG_DATABASE_URL, then a summary of what it created,
  dropped and closed; exit 1 when a step failed (it is named), 0 otherwise — also when
  another instance's run held the lock (then nothing was done, and it says so).
- `trygg maintain --dry-run`: what retention would drop now; nothing is changed.
- `trygg maintain purge-audit --before YYYY-MM-DD --actor NAME`: removes audit rows older
  than the date through `trygg.purge_audit_before` (a login in `trygg_maintainer`;
  docs/privacy.md "The audit log"); the database refuses a date less than 2 years ago.
- `keep_maintained`: `trygg up`'s task, a run every TRYGG_MAINTENANCE_INTERVAL_S on a
  worker thread and a pool of its own (two connections), so neither the event loop nor the
  stages' pool ever waits for it. A run that fails is logged and tried again next interval.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, NoReturn

import psycopg
import typer

from trygg.logging import get_logger
from trygg.settings import Settings

if TYPE_CHECKING:  # imported where used: `trygg --help` stays quick
    from storage import Pool
    from storage.maintenance import Expired, Report, Retention

log = get_logger(__name__)

#: connections of the maintenance pool: the lock's and the work's
POOL_SIZE = 2


def retention_of(settings: Settings) -> Retention:
    from storage.maintenance import Retention

    return Retention(
        events=timedelta(days=settings.retain_events_days),
        heartbeats=timedelta(days=settings.retain_heartbeats_days),
        device_hourly=timedelta(days=settings.retain_device_hourly_days),
        device_daily=timedelta(days=settings.retain_device_daily_days),
        dead_letters=timedelta(days=settings.retain_dead_letters_days),
    )


def run_once(pool: Pool, settings: Settings, now: datetime | None = None,
             stop: Callable[[], bool] = lambda: False) -> Report:
    from storage.maintenance import run

    return run(pool, retention_of(settings), now, stop=stop)


# --- inside `trygg up` ------------------------------------------------------------------

async def keep_maintained(settings: Settings, conninfo: str) -> None:
    """Run maintenance now and every TRYGG_MAINTENANCE_INTERVAL_S until cancelled. A
    cancel waits for the step in progress (never a DDL statement cut in half), then ends."""
    from composition.runtime import open_pool

    pool = await asyncio.to_thread(open_pool, conninfo, POOL_SIZE, name="trygg-maintenance")
    stop = threading.Event()
    try:
        while True:
            work = asyncio.ensure_future(asyncio.to_thread(_run_logged, pool, settings, stop.is_set))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()
                await work
                raise
            await asyncio.sleep(settings.maintenance_interval_s)
    finally:
        stop.set()
        await asyncio.to_thread(pool.close)


def _run_logged(pool: Pool, settings: Settings, stop: Callable[[], bool]) -> None:
    try:
        run_once(pool, settings, stop=stop)
    except Exception as exc:  # PostgreSQL down, a pool timeout: the next interval tries again
        log.error("maintenance_run_failed", error=f"{type(exc).__name__}: {str(exc).strip()}")


# --- `trygg maintain` -------------------------------------------------------------------

def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"trygg: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    from composition.cli import settings_or_exit

    return settings_or_exit()


def _when(t: datetime | None) -> str:
    return "—" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def summary(report: Report) -> list[str]:
    """The report as lines for an operator."""
    if not report.ran:
        return ["maintenance: another run (another Trygg instance) holds the lock; nothing done"]
    lines = []
    for step in report.steps:
        head = f"{step.name:<18} {'ok' if step.ok else 'FAILED':<6} {step.seconds:7.3f} s"
        detail = step.detail
        parts: list[str] = []
        if "created" in detail:
            created = detail["created"]
            parts.append(f"created {len(created)} partition(s)" + (": " + ", ".join(created) if created else ""))
        if "dropped" in detail:
            dropped = detail["dropped"]
            parts.append(f"dropped {len(dropped)} partition(s)" + (": " + ", ".join(dropped) if dropped else ""))
        if "hourly_until" in detail:
            parts.append(f"hourly closed until {_when(datetime.fromisoformat(detail['hourly_until']))} "
                         f"(+{detail['hourly_rows']} rows), daily until {detail['daily_until']} "
                         f"(+{detail['daily_rows']} rows)")
        if "skipped" in detail:
            parts.append(f"skipped: {detail['skipped']}")
        if "removed" in detail:
            parts.append(f"removed {detail['removed']} old log row(s)")
        shown = {"created", "dropped", "hourly_until", "hourly_rows", "daily_until", "daily_rows", "skipped",
                 "removed", "not_dropped"}
        parts += [f"{key} {value}" for key, value in detail.items() if key not in shown]
        if step.error:
            parts.append(step.error)
        lines.append(head + ("  " + "; ".join(parts) if parts else ""))
    created, dropped = report.created, report.dropped
    lines.append(f"maintenance {'done' if report.ok else 'FAILED in part'}: "
                 f"{len(created)} partition(s) created, {len(dropped)} dropped")
    return lines


def dry_run_lines(items: list[Expired], retention: Retention) -> list[str]:
    keeps = retention.by_parent()
    if not items:
        return ["dry run: nothing is past its retention; nothing would be dropped"]
    lines = [f"would drop {e.name} ({e.parent}, kept {keeps[e.parent].days} days"
             + (f", ended {_when(e.upper)})" if e.upper else ", a TimescaleDB chunk)") for e in items]
    return [*lines, f"dry run: {len(items)} partition(s) would be dropped; nothing was changed"]


def maintain(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be dropped; change nothing")] = False,
) -> None:
    """Run maintenance once: partitions ahead, device rollups, retention (docs/storage.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from composition.runtime import open_database
    from storage.maintenance import plan, run

    settings = _settings()
    retention = retention_of(settings)
    try:
        with open_database(settings, POOL_SIZE) as pool:
            if dry_run:
                with pool.connection() as conn:
                    lines = dry_run_lines(plan(conn, retention, datetime.now(UTC)), retention)
                    ok = True
            else:
                report = run(pool, retention)
                lines, ok = summary(report), report.ok or not report.ran
    except psycopg.Error as exc:
        _fail(str(exc).strip(), 1)
    for line in lines:
        typer.echo(line)
    if not ok:
        raise typer.Exit(1)


def _cutoff(value: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        _fail(f"--before {value!r} is not a date like 2023-01-31")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def purge_audit(
    before: Annotated[str, typer.Option("--before", metavar="YYYY-MM-DD",
                                        help="remove audit rows recorded before this day (UTC midnight)")],
    actor: Annotated[str, typer.Option("--actor", help="who does it (recorded in the audit log)")],
) -> None:
    """Remove audit rows older than a date (at least 2 years ago); needs a login in
    trygg_maintainer. The removal itself is recorded in the audit log."""
    from composition.runtime import open_pool, resolve_database

    cutoff = _cutoff(before)
    if not actor.strip() or len(actor) > 200:
        _fail("--actor must name who purges the audit log (1 to 200 characters)")
    settings = _settings()
    try:
        # No migrations here: a login of trygg_maintainer may read nothing but call the function.
        with open_pool(resolve_database(settings), 1) as pool, pool.connection() as conn:
            row = conn.execute("SELECT trygg.purge_audit_before(%s, %s)", (cutoff, actor)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        _fail("this database user may not purge the audit log: it must be a member of "
              "trygg_maintainer (docs/privacy.md \"The audit log\")", 1)
    except psycopg.Error as exc:
        _fail(f"the audit log was not changed: {str(exc).strip()}", 1)
    removed = row[0] if row else 0
    typer.echo(f"audit log: {removed} row(s) recorded before {cutoff:%Y-%m-%d} removed; "
               f"the removal is recorded in the log (actor {actor.strip()}, role maintainer)")


def register(app: typer.Typer) -> None:
    """Add the `maintain` command (with `purge-audit`) to the `trygg` app."""
    maintain_app = typer.Typer(help="Partitions ahead, retention, rollups; purging old audit rows.",
                               invoke_without_command=True)
    maintain_app.callback()(maintain)
    maintain_app.command("purge-audit")(purge_audit)
    app.add_typer(maintain_app, name="maintain")


__all__ = ["keep_maintained", "register", "retention_of", "run_once", "summary"]
