"""`trygg up --demo`: the insights' first 60 days, simulated (docs/console.md "Changes worth a
look"). Here the simulator (simulators/decline.py), the insights core (processors/insights)
and storage (storage/insights_store.py) meet.

A new demo has no history, so the daily job (composition/insights.py) would show nothing
for weeks. When the demo database has no insight state yet, the `DAYS` days before
yesterday of each demo resident are simulated (`simulators.decline.of_residents`: the
resident's own sensors and night window), run through the real core day by day
(`daily_features`, `advance`) with the frames of the registry (`frames_of`), and stored as
the job stores a day (`write_results`), all in one transaction under the insights lock.
Two residents of team east decline (`CHANGES`); the others are stable, and what notices
they get are the detector's false ones. The daily job then goes on from each resident's
`through_day` with the events the demo fleet sends: from yesterday on, the days are
measured.

It runs once, at start, in a child process of its own (trygg/isolated.py, as the job's
passes), so the alarm path never waits for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import TYPE_CHECKING, Final

import psycopg

from trygg.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from composition.app import Services
    from simulators.decline import Change
    from trygg.insights import Params
    from trygg.registry import Resident

log = get_logger(__name__)

#: the simulated days: the last `DAYS` before yesterday
DAYS: Final = 60
#: a seeding ends by this long at the latest (it takes a few seconds)
SEED_TIMEOUT_S: Final = 600.0


def changes() -> dict[str, Change]:
    """Who declines in the simulated past (team east: `ola` of the README sees both):
    r-0007 gets up more and more often at night, to the toilet and restless, over two weeks
    from day 20 (a notice on one of the two in 30 start dates of 30 tried, on the toilet
    visits in 23);
    r-0010 falls ill two weeks before the last simulated day (later up, fewer active hours,
    fewer trips out; a notice in 30 of 30). Every other demo resident is stable."""
    from simulators.decline import Change

    return {
        "r-0007": Change("gradual", ("more_night_toilet_visits", "more_night_activity"), onset=20, ramp=14,
                         strength=1.0),
        "r-0010": Change("abrupt", ("fewer_active_hours", "later_start", "fewer_trips_out"), onset=DAYS - 14),
    }


@dataclass(frozen=True)
class SeedJob:
    """What the seeding needs (it crosses into the child process: it pickles)."""

    conninfo: str
    params: Params
    #: the time the seeding takes as now (tests); None: the clock
    now: datetime | None = None
    log_level: str = "info"
    log_format: str = "auto"


@dataclass(frozen=True)
class Seeded:
    """What a seeding did; `done` False: the database had insight state already."""

    done: bool
    residents: int = 0
    days: int = 0
    notices: int = 0
    first_day: date | None = None
    last_day: date | None = None


def seed(job: SeedJob) -> Seeded:
    """Simulate and store the demo residents' last `DAYS` days before yesterday, unless
    any resident has insight state already. Waits for a pass of the daily job in progress
    (the insights lock)."""
    from storage import load_registry
    from storage.insights_store import lock, unlock

    now = job.now or datetime.now(UTC)
    with psycopg.connect(job.conninfo, autocommit=True) as lock_conn:
        lock(lock_conn)
        try:
            with psycopg.connect(job.conninfo, autocommit=True) as conn, conn.transaction():
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM trygg.insight_state)").fetchone()
                if row is None or row[0]:
                    return Seeded(done=False)
                residents = _demo_residents(load_registry(conn).residents)
                seeded = Seeded(done=True)
                for _zone, group in groupby(sorted(residents, key=lambda r: (r.timezone, r.id)),
                                            key=lambda r: r.timezone):
                    seeded = _add(seeded, _seed_zone(conn, list(group), now, job.params))
                return seeded
        finally:
            if not lock_conn.broken:
                unlock(lock_conn)


def _demo_residents(registered: list[Resident]) -> list[Resident]:
    """The registry's residents the demo fleet simulates (all of them, in the demo)."""
    from simulators import DEMO_RESIDENTS, DEMO_SEED, build_residents

    simulated = {r.id for r in build_residents(DEMO_SEED, DEMO_RESIDENTS)}
    return [r for r in registered if r.id in simulated]


def _seed_zone(conn: psycopg.Connection[tuple[object, ...]], residents: list[Resident], now: datetime,
               params: Params) -> Seeded:
    """The days of residents of one time zone (row i = residents[i] in every batch)."""
    import numpy as np

    from composition.insights import frames_of, yesterday
    from processors.insights import States, advance, daily_features, seen_capabilities
    from simulators import DEMO_RESIDENTS, DEMO_SEED, build_residents
    from simulators.decline import of_residents
    from storage.insights_store import write_results

    fleet = {r.id: r for r in build_residents(DEMO_SEED, DEMO_RESIDENTS)}
    last = yesterday(residents[0].timezone, now) - timedelta(days=1)
    first = last - timedelta(days=DAYS - 1)
    town = of_residents([fleet[r.id] for r in residents], DAYS, first, seed=DEMO_SEED, changes=changes())
    ids = [r.id for r in residents]
    states = States.load([None] * len(ids), params)
    notices = 0
    for d in range(DAYS):
        batch = town.day(d)
        frames, _ = frames_of(residents, batch.day)
        assert frames.capabilities is not None
        frames = replace(frames, capabilities=frames.capabilities | seen_capabilities(batch.events, len(ids)))
        daily = daily_features(batch.events, frames, params)
        raised, bands = advance(states, daily, np.full(len(ids), batch.day.toordinal(), np.int32), params)
        write_results(conn, ids, [batch.day] * len(ids), daily, bands, raised, states.blobs())
        notices += len(raised)
    return Seeded(done=True, residents=len(ids), days=DAYS, notices=notices, first_day=first, last_day=last)


def _add(a: Seeded, b: Seeded) -> Seeded:
    return Seeded(done=True, residents=a.residents + b.residents, days=max(a.days, b.days),
                  notices=a.notices + b.notices, first_day=min(d for d in (a.first_day, b.first_day) if d),
                  last_day=max(d for d in (a.last_day, b.last_day) if d))


def seed_in_child(job: SeedJob) -> Seeded:
    """The child process's side of `run_isolated`: logging as the parent's, then the seeding."""
    configure_logging(job.log_level, job.log_format)
    return seed(job)


async def simulated_past(services: Services) -> None:
    """The demo's task: seed the insights once (in a child process), then wait for the
    end. A failure is logged and leaves the insights to the daily job; the demo goes on."""
    from composition.insights import params_of
    from storage import conninfo_of
    from trygg.isolated import run_isolated

    settings = services.settings
    if settings.insights_enabled:
        job = SeedJob(conninfo_of(services.pool), params_of(settings), log_level=settings.log_level,
                      log_format=settings.log_format)
        try:
            seeded = await asyncio.to_thread(run_isolated, seed_in_child, job, timeout_s=SEED_TIMEOUT_S,
                                             name="demo-insights")
        except Exception as exc:  # PostgreSQL down, a bug: the demo goes on without a past
            log.error("demo_insights_not_seeded", error=f"{type(exc).__name__}: {str(exc).strip()}")
        else:
            if seeded.done:
                log.info("demo_insights_seeded", residents=seeded.residents, days=seeded.days,
                         notices=seeded.notices, first_day=str(seeded.first_day), last_day=str(seeded.last_day),
                         simulated=True)
            else:
                log.info("demo_insights_kept_the_days_already_stored")
    await services.stopping.wait()


__all__ = ["DAYS", "SeedJob", "Seeded", "changes", "seed", "simulated_past"]
