"""Early signs of decline, run by itself (docs/insights.md, docs/operators.md "Insights"):
the daily job of `trygg up` and `trygg insights recompute`. Here storage
(storage/insights_store.py) meets the pure core (processors/insights).

A *pass* computes every resident-day that is due: a resident's days run from the day
after its last computed one (`trygg.insight_state.through_day`; for a new resident the
day of its first stored event), at most `MAX_DAYS_BACK` days back, up to yesterday in the
resident's time zone. Days are computed in order, one day of up to TRYGG_INSIGHTS_BATCH
residents at a time: the events are read (`load_day`), the features computed, the
baselines advanced, and the days, notices and states written in one transaction, so a
pass stopped anywhere goes on from there next time. A pass holds the insights lock
(storage.insights_store.LOCK_KEY) for its whole length: once per cluster at a time.

In `trygg up` (`keep_insights`) each pass runs in a child process of its own
(trygg/isolated.py: nice 10, its own interpreter, so the alarm path never waits for the
GIL) every TRYGG_INSIGHTS_INTERVAL_S, and rests after each batch so that its batches'
time (its own CPU and PostgreSQL's, which take turns) stays within
TRYGG_INSIGHTS_CPU_SHARE of the time that passes. A shutdown asks it to stop after
the batch in progress (a file it looks for between batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn
from zoneinfo import ZoneInfo

import psycopg
import typer

from trygg.logging import configure_logging, get_logger
from trygg.registry import Resident
from trygg.settings import Settings

if TYPE_CHECKING:  # imported where used (numpy among them): `trygg --help` stays quick

    from storage.insights_store import Sensor
    from trygg.insights import Events, Frames, Params

log = get_logger(__name__)

#: the furthest back a pass (or a recompute) computes
MAX_DAYS_BACK: Final = 60
#: a pass in the child process ends by this long at the latest (it is killed after it)
PASS_TIMEOUT_S: Final = 12 * 3600.0
#: how often a resting pass looks whether it is asked to stop
REST_STEP_S: Final = 0.5
#: `trygg up` starts the first pass this long after it started (start-up has the CPU first)
FIRST_PASS_AFTER_S: Final = 60.0

Connection = psycopg.Connection[tuple[Any, ...]]
Progress = Callable[[str], None]


def params_of(settings: Settings) -> Params:
    """`trygg.insights.Params` from TRYGG_INSIGHTS_*."""
    from trygg.insights import Params

    return Params(
        baseline_days=settings.insights_baseline_days, min_days=settings.insights_min_days,
        z_clip=settings.insights_z_clip, slow_k=settings.insights_slow_k, slow_h=settings.insights_slow_h,
        fast_k=settings.insights_fast_k, fast_h=settings.insights_fast_h,
        cooldown_days=settings.insights_cooldown_days,
        max_unheard_hours=settings.insights_max_unheard_hours, away_hours=settings.insights_away_hours,
        window_days=settings.insights_window_days, guard_days=settings.insights_guard_days)


# --- a day of a batch -------------------------------------------------------------------

_MOTION: Final = "motion_sensor"
_DOOR: Final = "door_sensor"
_GPS: Final = frozenset({"gps_tracker", "phone"})


def frames_of(residents: Sequence[Resident], day: date) -> tuple[Frames, list[Sensor]]:
    """The frames of `day` for each resident (row i = residents[i]) and the batch's devices,
    from the registry: bounds in the resident's zone and night window, sensors, absences,
    location basis, and what the sensors can see (`Frames.capabilities`)."""
    import numpy as np

    from processors.insights import frame_bounds
    from storage.insights_store import Sensor
    from trygg.insights import BATHROOM_NAMES, CAP_BATHROOM, CAP_EXIT_DOOR, CAP_GPS, CAP_ROOMS, Frames, is_exit_door

    n = len(residents)
    bounds = np.zeros((n, 4))
    sensors: list[Sensor] = []
    activity = np.zeros(n, np.int16)
    away = np.zeros(n, np.bool_)
    located = np.zeros(n, np.bool_)
    caps = np.zeros(n, np.int16)
    for i, res in enumerate(residents):
        bounds[i] = frame_bounds(day, res.timezone, res.night.start_time(), res.night.end_time())
        away[i] = res.away_on(day)
        located[i] = res.location_basis is not None and res.location_basis.valid_on(day)
        cap = 0
        for dev in res.devices:
            sensors.append(Sensor(dev.id, i, dev.kind, dev.room))
            if dev.kind == _MOTION:
                activity[i] += 1
                if dev.room:
                    cap |= CAP_BATHROOM | CAP_ROOMS if dev.room.strip().lower() in BATHROOM_NAMES else CAP_ROOMS
            elif dev.kind == _DOOR:
                activity[i] += 1
                if is_exit_door(dev.room):
                    cap |= CAP_EXIT_DOOR
            elif dev.kind in _GPS and located[i]:
                cap |= CAP_GPS
        caps[i] = cap
    frames = Frames(day_start=bounds[:, 0], day_end=bounds[:, 1], night_start=bounds[:, 2], night_end=bounds[:, 3],
                    activity_sensors=activity, away=away, located=located, capabilities=caps)
    return frames, sensors


def load_day(conn: Connection, residents: Sequence[Resident], day: date) -> tuple[Events, Frames]:
    """`day` of each resident (row i = residents[i]) as the core takes it: the events of
    its frame and the frame itself. The benchmark's timing point for reading."""
    import numpy as np

    from processors.insights import seen_capabilities
    from storage.insights_store import read_events

    frames, sensors = frames_of(residents, day)
    events = read_events(conn, [r.id for r in residents], frames, sensors)
    assert frames.capabilities is not None  # the registry's, and what the rows show besides
    caps = (frames.capabilities | seen_capabilities(events, len(residents))).astype(np.int16)
    return events, replace(frames, capabilities=caps)


@dataclass(frozen=True, slots=True)
class BatchDone:
    residents: int
    events: int
    notices: int


def compute_day(conn: Connection, residents: Sequence[Resident], day: date, params: Params) -> BatchDone:
    """Compute `day` of each resident and store it (one transaction): the residents' last
    computed day must be the day before (or none)."""
    import numpy as np

    from processors.insights import States, advance, daily_features
    from storage.insights_store import read_states, write_results

    ids = [r.id for r in residents]
    events, frames = load_day(conn, residents, day)
    daily = daily_features(events, frames, params)
    states = States.load(read_states(conn, ids), params)
    notices, bands = advance(states, daily, np.full(len(ids), day.toordinal(), np.int32), params)
    write_results(conn, ids, [day] * len(ids), daily, bands, notices, states.blobs())
    return BatchDone(len(ids), len(events), len(notices))


# --- a pass -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """What a pass needs (it crosses into the child process: it pickles)."""

    conninfo: str
    params: Params
    batch: int = 5000
    cpu_share: float = 1.0
    #: a recompute: only these residents (None: all), from this day (their days and
    #: states from then on are forgotten first; the baselines start anew)
    only: tuple[str, ...] | None = None
    since: date | None = None
    #: the pass stops after the batch in progress once this file exists
    stop_path: str | None = None
    #: the time the pass takes as now (tests); None: the clock
    now: datetime | None = None
    log_level: str = "info"
    log_format: str = "auto"


@dataclass
class Report:
    """What a pass did; `ran` False: another pass (another instance) held the lock."""

    ran: bool
    resident_days: int = 0
    events: int = 0
    notices: int = 0
    batches: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stopped: bool = False
    forgotten: dict[str, int] = field(default_factory=dict)


def yesterday(zone: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(zone)).date() - timedelta(days=1)


def _nothing_due(conn: Connection, now: datetime) -> bool:
    """Every resident of the registry has a state through yesterday (a cheap look before
    the registry is read: most passes of a day find nothing to do)."""
    zones = [str(r[0]) for r in conn.execute("SELECT DISTINCT timezone FROM trygg.residents")]
    if not zones:
        return True
    latest = max(yesterday(z, now) for z in zones)
    row = conn.execute("SELECT count(*) FROM trygg.residents r LEFT JOIN trygg.insight_state s"
                       " ON s.resident_id = r.id WHERE s.through_day IS NULL OR s.through_day < %s",
                       (latest,)).fetchone()
    return row is not None and row[0] == 0


def due_days(conn: Connection, residents: Sequence[Resident], now: datetime,
             since: date | None = None) -> dict[date, list[Resident]]:
    """Each resident's first day due, mapped to the residents it is first for. From the
    day after its state's, else (a new resident, or `since` given) from `since` or its
    first stored event; never more than MAX_DAYS_BACK days back; up to its yesterday."""
    from storage.insights_store import first_event_days, read_progress

    ids = [r.id for r in residents]
    floor = now.astimezone(UTC).date() - timedelta(days=MAX_DAYS_BACK)
    done = {} if since is not None else read_progress(conn, ids)
    new = [r for r in residents if r.id not in done]
    first = {} if since is not None else first_event_days(conn, [r.id for r in new], [r.timezone for r in new], floor)
    out: dict[date, list[Resident]] = defaultdict(list)
    for res in residents:
        last = yesterday(res.timezone, now)
        if res.id in done:
            start = done[res.id] + timedelta(days=1)
        elif since is not None:
            start = since
        else:
            start = first.get(res.id, last)
        start = max(start, floor)
        if start <= last:
            out[start].append(res)
    return out


def run_pass(job: Job, progress: Progress | None = None, *, wait: bool = False) -> Report:
    """One pass under the insights lock (`wait`: for it; else a pass of another instance
    means nothing to do now). Connects by itself (two connections: the lock's, the work's)."""
    from storage.insights_store import forget, lock, try_lock, unlock
    from storage.registry_store import load_registry

    now = job.now or datetime.now(UTC)
    with psycopg.connect(job.conninfo, autocommit=True) as lock_conn:
        if wait:
            if not try_lock(lock_conn):
                if progress:
                    progress("waiting for the pass of the daily job in progress to end")
                lock(lock_conn)
        elif not try_lock(lock_conn):
            log.info("insights_pass_skipped_another_pass_holds_the_lock")
            return Report(ran=False)
        try:
            with psycopg.connect(job.conninfo, autocommit=True) as conn:
                log.info("insights_database_backend", priority=nice_backend(conn))
                report = Report(ran=True)
                if job.since is not None:
                    report.forgotten = forget(conn, job.only, job.since)
                elif _nothing_due(conn, now):
                    return report
                registry = load_registry(conn)
                residents = registry.residents
                if job.only is not None:
                    wanted = set(job.only)
                    residents = [r for r in residents if r.id in wanted]
                _work(conn, job, residents, now, report, progress)
                return report
        finally:
            if not lock_conn.broken:
                unlock(lock_conn)


def nice_backend(conn: Connection) -> str:
    """Give the connection's PostgreSQL backend the lower priority of the pass's own process
    when the database runs on this machine: most of a pass's CPU is the backend's, and on
    a small machine it competes with the alarm path. Best effort, and only for the one
    process that is certainly this connection's backend (its command line names this
    connection's own client port, or a local socket); what happened is returned for the log."""
    from trygg.isolated import CHILD_NICE

    host = conn.info.host
    local_socket = host.startswith("/")
    if not (local_socket or host in ("localhost", "127.0.0.1", "::1")):
        return "unchanged: the database is on another machine"
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    pid = int(row[0]) if row else 0
    if local_socket:
        mark = "[local]"
    else:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            mark = f"({sock.getsockname()[1]})"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return "unchanged: the backend is not visible from here"
    if not command.startswith("postgres") or mark not in command:
        return "unchanged: the backend is not visible from here"
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), CHILD_NICE))
    except OSError:
        return "unchanged: not permitted"
    return f"nice {os.getpriority(os.PRIO_PROCESS, pid)}"


def _work(conn: Connection, job: Job, residents: Sequence[Resident], now: datetime, report: Report,
          progress: Progress | None) -> None:
    pending = due_days(conn, residents, now, job.since)
    if not pending:
        return
    day = min(pending)
    log.info("insights_pass_started", residents=sum(len(v) for v in pending.values()), first_day=day.isoformat())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        todo = sorted(pending.pop(day, []), key=lambda r: r.id)
        for start in range(0, len(todo), job.batch):
            if _asked_to_stop(job):
                report.stopped = True
                log.info("insights_pass_stopped", resident_days=report.resident_days)
                return
            batch = todo[start:start + job.batch]
            t0, c0 = time.perf_counter(), time.process_time()
            done = compute_day(conn, batch, day, job.params)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            report.resident_days += done.residents
            report.events += done.events
            report.notices += done.notices
            report.batches += 1
            log.info("insights_batch_done", day=day.isoformat(), residents=done.residents, events=done.events,
                     notices=done.notices, seconds=round(wall, 3), cpu_seconds=round(cpu, 3))
            if progress:
                progress(f"{day.isoformat()}: {done.residents:,} resident(s), {done.events:,} events, "
                         f"{done.notices} notice(s) in {wall:.1f} s ({report.resident_days:,} resident-days done)")
            _rest(job, wall)
        following = day + timedelta(days=1)
        onward = [r for r in todo if following <= yesterday(r.timezone, now)]
        if onward:
            pending.setdefault(following, []).extend(onward)
        if not pending:
            break
        day = min(pending)
    report.seconds = time.perf_counter() - wall0
    report.cpu_seconds = time.process_time() - cpu0
    log.info("insights_pass_done", resident_days=report.resident_days, events=report.events, notices=report.notices,
             batches=report.batches, seconds=round(report.seconds, 3), cpu_seconds=round(report.cpu_seconds, 3))


def _asked_to_stop(job: Job) -> bool:
    return job.stop_path is not None and os.path.exists(job.stop_path)


def _rest(job: Job, wall: float) -> None:
    """Sleep so that the batch's time is at most `cpu_share` of the time since it began.
    A batch's wall time is the work's: most of it is PostgreSQL's (reading the events:
    three quarters of a 100,000-resident day), whose backend this process cannot see or
    nice, while the two of them take turns rather than run at once."""
    remaining = wall / job.cpu_share - wall
    while remaining > 0 and not _asked_to_stop(job):
        step = min(REST_STEP_S, remaining)
        time.sleep(step)
        remaining -= step


def pass_in_child(job: Job) -> Report:
    """The child process's side of `run_isolated`: logging as the parent's, then a pass."""
    configure_logging(job.log_level, job.log_format)
    return run_pass(job)


# --- inside `trygg up` ------------------------------------------------------------------

def job_of(settings: Settings, conninfo: str, **more: Any) -> Job:
    return Job(conninfo, params_of(settings), batch=settings.insights_batch, cpu_share=settings.insights_cpu_share,
               log_level=settings.log_level, log_format=settings.log_format, **more)


async def keep_insights(settings: Settings, conninfo: str, first_after_s: float = FIRST_PASS_AFTER_S) -> None:
    """A pass `first_after_s` from now and then every TRYGG_INSIGHTS_INTERVAL_S until
    cancelled, each in a child process. A cancel asks the pass to stop after its batch in
    progress and waits for it."""
    from trygg.isolated import run_isolated

    await asyncio.sleep(first_after_s)
    with tempfile.TemporaryDirectory(prefix="trygg-insights-") as folder:
        stop = Path(folder) / "stop"
        job = job_of(settings, conninfo, stop_path=str(stop))
        while True:
            work = asyncio.ensure_future(asyncio.to_thread(_pass_logged, run_isolated, job))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.touch()
                with contextlib.suppress(Exception):
                    await work
                raise
            await asyncio.sleep(settings.insights_interval_s)


def _pass_logged(run_isolated: Callable[..., Report], job: Job) -> None:
    try:
        run_isolated(pass_in_child, job, timeout_s=PASS_TIMEOUT_S, name="insights")
    except Exception as exc:  # PostgreSQL down, a bug in one batch: the next interval tries again
        log.error("insights_pass_failed", error=f"{type(exc).__name__}: {str(exc).strip()}")


# --- `trygg insights` -------------------------------------------------------------------

def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"trygg: {message}", err=True)
    raise typer.Exit(code)


def recompute(
    resident: Annotated[list[str] | None, typer.Option("--resident", metavar="ID",
                                                       help="only this resident (repeat for more); "
                                                            "default: every resident")] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="YYYY-MM-DD",
                                              help=f"from this day (default and earliest: {MAX_DAYS_BACK} "
                                                   "days ago)")] = None,
) -> None:
    """Forget the computed days from --since on and compute them again; the baselines start
    anew on that day. Notices already seen are kept with who saw them and the note."""
    from composition.cli import settings_or_exit
    from composition.runtime import open_database
    from storage import conninfo_of, load_registry

    settings = settings_or_exit()
    today = datetime.now(UTC).date()
    floor = today - timedelta(days=MAX_DAYS_BACK)
    try:
        start = floor if since is None else date.fromisoformat(since)
    except ValueError:
        _fail(f"--since {since!r} is not a date like 2026-11-01")
    if start > today:
        _fail(f"--since {start} is in the future")
    if start < floor:
        typer.echo(f"--since {start} is more than {MAX_DAYS_BACK} days ago: from {floor} on")
        start = floor
    try:
        with open_database(settings, 1) as pool:
            conninfo = conninfo_of(pool)
            with pool.connection() as conn:
                known = {r.id for r in load_registry(conn).residents}
        unknown = sorted(set(resident or ()) - known)
        if unknown:
            _fail("no resident " + ", ".join(unknown) + " in the registry; nothing was changed")
        only = tuple(dict.fromkeys(resident)) if resident else None
        typer.echo(f"recomputing {len(only) if only else len(known):,} resident(s) from {start}")
        report = run_pass(job_of(settings, conninfo, only=only, since=start), typer.echo, wait=True)
    except psycopg.Error as exc:
        _fail(str(exc).strip(), 1)
    forgot = report.forgotten
    typer.echo(f"insights recomputed: {report.resident_days:,} resident-days, {report.events:,} events, "
               f"{report.notices} notice(s) in {report.seconds:.1f} s (forgotten first: {forgot.get('days', 0):,} "
               f"days, {forgot.get('notices', 0)} notices not yet seen; notices seen are kept)")


def register(app: typer.Typer) -> None:
    """Add `trygg insights recompute` to the `trygg` app."""
    insights_app = typer.Typer(help="Early signs of decline: daily features and notices (docs/insights.md).",
                               no_args_is_help=True)
    insights_app.command("recompute")(recompute)
    app.add_typer(insights_app, name="insights")


__all__ = ["Job", "Report", "compute_day", "due_days", "frames_of", "keep_insights", "load_day", "params_of",
           "register", "run_pass"]
