"""The daily insights job against a real PostgreSQL (composition/insights.py; docs/operators.md
"Insights"): a pass computes each resident's days from its first stored event up to
yesterday in its time zone and raises a notice when the nights change; the next pass has
nothing to do, and a pass stopped half-way goes on from where it stopped; of two passes one
works; a recompute forgets and computes again but keeps who saw a notice; `trygg up`'s task
runs the passes in a child process and stops with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time as time_module
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from composition.insights import Job, _rest, keep_insights, load_day, nice_backend, params_of, run_pass
from storage import Pool, save_registry
from storage.insights_store import LOCK_KEY
from tests.helpers import wait_for
from trygg.insights import Kind, Params
from trygg.isolated import CHILD_NICE
from trygg.registry import Registry, validate_registry
from trygg.settings import Settings

pytestmark = pytest.mark.integration

OSLO = ZoneInfo("Europe/Oslo")
#: the pass's clock in most tests: 08:00 in Oslo on 2026-11-30
NOW = datetime(2026, 11, 30, 8, tzinfo=OSLO)
FIRST = date(2026, 11, 1)  # the first stored event: residents' days begin here
CHANGE = date(2026, 11, 22)  # from this night on, "a" gets up to the toilet five times a night
PARAMS = Params(baseline_days=14, min_days=10, guard_days=0, window_days=7)


def registry() -> Registry:
    sensors = [{"id": "{r}-bed", "kind": "motion_sensor", "room": "bedroom"},
               {"id": "{r}-bath", "kind": "motion_sensor", "room": "bad"},
               {"id": "{r}-door", "kind": "door_sensor"}]
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [{"id": r, "name": f"Resident {r}", "team": "east",
                       "devices": [{**s, "id": s["id"].format(r=r)} for s in sensors],
                       "absences": [{"start": "2026-11-10", "end": "2026-11-11", "reason": "hospital"}]
                       if r == "b" else []}
                      for r in ("a", "b")],
    })


def history(conn: psycopg.Connection[tuple[object, ...]], first: date, last: date, change: date | None) -> None:
    """Days of two residents: awake 07:00–21:00 (the bedroom every 10 minutes), one night-time
    toilet visit (five for "a" from `change` on), every sensor heard every hour."""
    rows = []
    day = first
    while day <= last:
        for r in ("a", "b"):
            for minute in range(7 * 60, 21 * 60, 10):
                rows.append((f"{r}-bed", r, "motion", datetime.combine(day, time(minute // 60, minute % 60), OSLO)))
            visits = 5 if r == "a" and change is not None and day >= change else 1
            for k in range(visits):
                rows.append((f"{r}-bath", r, "motion", datetime.combine(day, time(1 + k), OSLO)))
        day += timedelta(days=1)
    with conn.cursor() as cur:
        with cur.copy("COPY trygg.events (device_id, event_id, resident_id, type, ts, received_at) FROM STDIN") as cp:
            for i, (device, resident, kind, ts) in enumerate(rows):
                cp.write_row((device, f"e{i}-{ts.timestamp():.0f}", resident, kind, ts, ts))
        start = datetime.combine(first - timedelta(days=1), time(0), UTC)
        end = datetime.combine(last + timedelta(days=2), time(0), UTC)
        cur.execute("SELECT trygg.ensure_partitions('trygg.device_hourly', %s, %s)", (start, end))
        cur.execute("INSERT INTO trygg.device_hourly (device_id, hour, heartbeats)"
                    " SELECT d, h, 60 FROM unnest(%s::text[]) d, generate_series(%s, %s, interval '1 hour') h",
                    ([f"{r}-{s}" for r in ("a", "b") for s in ("bed", "bath", "door")], start, end))
        cur.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s", (end,))


def seed(pool: Pool, first: date, last: date, change: date | None = None) -> None:
    """The registry of `registry()` and the `history` of its residents."""
    with pool.connection() as conn:
        conn.autocommit = True
        save_registry(conn, registry(), actor="test")
        history(conn, first, last, change)


@pytest.fixture
def world(pool: Pool, database: str) -> Iterator[str]:
    seed(pool, FIRST, NOW.date(), CHANGE)
    yield database


def job(url: str, **more: object) -> Job:
    return Job(url, PARAMS, **{"now": NOW, **more})  # type: ignore[arg-type]


def test_a_pass_computes_every_day_due_and_notices_the_nights(world: str, pool: Pool) -> None:
    lines: list[str] = []
    report = run_pass(job(world), lines.append)
    assert report.ran and report.resident_days == 2 * 29  # 1–29 November, both residents
    assert lines[0].startswith("2026-11-01: 2 resident(s)")
    with pool.connection() as conn:
        assert conn.execute("SELECT resident_id, min(day), max(day), count(*) FROM trygg.insight_days"
                            " GROUP BY 1 ORDER BY 1").fetchall() == [
            ("a", FIRST, date(2026, 11, 29), 29), ("b", FIRST, date(2026, 11, 29), 29)]
        assert conn.execute("SELECT resident_id, through_day FROM trygg.insight_state ORDER BY 1").fetchall() == [
            ("a", date(2026, 11, 29)), ("b", date(2026, 11, 29))]
        # the hospital days of b are away, not usable; the others usable with every hour heard
        assert conn.execute("SELECT day FROM trygg.insight_days WHERE NOT usable ORDER BY day").fetchall() == [
            (date(2026, 11, 10),), (date(2026, 11, 11),)]
        assert conn.execute("SELECT max(hours_unheard) FROM trygg.insight_days").fetchone() == (0,)
        visits = conn.execute("SELECT vals[5] FROM trygg.insight_days WHERE resident_id = 'a' ORDER BY day"
                              ).fetchall()
        assert [v[0] for v in visits[:3]] == [1.0, 1.0, 1.0] and visits[-1][0] == 5.0
        notices = conn.execute("SELECT resident_id, feature, day, reason_en FROM trygg.insight_notices").fetchall()
    toilet = [n for n in notices if n[1] == "night_toilet_visits"]
    assert {n[0] for n in notices} == {"a"} and len(toilet) == 1  # b's days did not change
    assert CHANGE < toilet[0][2] <= CHANGE + timedelta(days=4)
    assert toilet[0][3].startswith("Night-time toilet visits")
    # nothing more is due until the next local midnight
    assert run_pass(job(world)).resident_days == 0
    assert run_pass(job(world, now=NOW + timedelta(days=1))).resident_days == 2


def test_a_pass_stopped_half_way_goes_on_from_there(world: str, pool: Pool, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if len(lines) == 5:
            stop.touch()  # as a shutdown of `trygg up` asks it

    first = run_pass(job(world, stop_path=str(stop), batch=1), progress)
    assert first.stopped and first.resident_days == 5
    stop.unlink()
    second = run_pass(job(world, stop_path=str(stop)))
    assert second.resident_days == 2 * 29 - 5
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM trygg.insight_days").fetchone() == (58,)


def test_of_two_passes_one_works(world: str) -> None:
    with psycopg.connect(world, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert not run_pass(job(world)).ran
    assert run_pass(job(world)).ran


def test_at_most_sixty_days_back(pool: Pool, database: str) -> None:
    seed(pool, date(2026, 9, 1), NOW.date())  # since long ago
    report = run_pass(job(database))
    assert report.resident_days == 2 * 60
    with pool.connection() as conn:
        assert conn.execute("SELECT min(day) FROM trygg.insight_days").fetchone() == (NOW.date() - timedelta(days=60),)


def test_recompute_keeps_who_saw_a_notice(world: str, pool: Pool) -> None:
    run_pass(job(world))
    with pool.connection() as conn:
        seen = conn.execute("UPDATE trygg.insight_notices SET seen_at = now(), seen_by = 'ola',"
                            " seen_note = 'Legen varslet' RETURNING notice_id, feature, day").fetchall()
        conn.commit()
    assert seen
    since = date(2026, 11, 15)
    report = run_pass(job(world, only=("a",), since=since), wait=True)
    assert report.forgotten == {"days": 15, "notices": 0, "states": 1}
    assert report.resident_days == 15  # a's days from the 15th; b's are left as they were
    with pool.connection() as conn:
        assert conn.execute("SELECT resident_id, count(*) FROM trygg.insight_days"
                            " WHERE computed_at >= (SELECT max(updated_at) FROM trygg.insight_state) - interval '1 min'"
                            " AND day >= %s GROUP BY 1", (since,)).fetchall()[0] == ("a", 15)
        assert conn.execute("SELECT notice_id, feature, day FROM trygg.insight_notices WHERE seen_by = 'ola'"
                            " AND seen_note = 'Legen varslet' ORDER BY notice_id").fetchall() == seen


def test_recompute_on_the_command_line_shows_its_progress(pool: Pool, database: str) -> None:
    """`trygg insights recompute` as an operator runs it (its own process: run in this one,
    the command would leave its logging on streams that close with it)."""
    now = datetime.now(UTC)
    seed(pool, now.date() - timedelta(days=5), now.date())
    env = {**os.environ, "TRYGG_DATABASE_URL": database}

    def trygg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trygg", "insights", "recompute", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    result = trygg("--resident", "a", "--since", (now.date() - timedelta(days=3)).isoformat())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recomputing 1 resident(s)" in result.stdout
    assert ": 1 resident(s)" in result.stdout  # a line per day
    assert "insights recomputed:" in result.stdout.splitlines()[-1]
    unknown = trygg("--resident", "zz")
    assert unknown.returncode == 2 and "no resident zz" in unknown.stderr
    bad = trygg("--since", "yesterday")
    assert bad.returncode == 2 and "is not a date" in bad.stderr


def test_load_day_gives_the_frames_and_rows_of_the_registry(world: str) -> None:
    with psycopg.connect(world) as conn:
        events, frames = load_day(conn, registry().residents, date(2026, 11, 23))
    assert len(frames) == 2 and list(frames.activity_sensors) == [3, 3]
    assert frames.capabilities is not None and (frames.capabilities & 3 == 3).all()  # rooms, a bathroom
    assert ((events.kind == Kind.HEARD) & (events.row == 0)).sum() == 3 * 25  # 3 sensors, 23:00 the eve to 24:00
    assert frames.night_start[0] == datetime(2026, 11, 22, 23, tzinfo=OSLO).timestamp()


def test_reading_day_after_day_on_one_connection_plans_each_batch_afresh(world: str) -> None:
    """A prepared statement's generic plan once joined a batch's million rows by nested
    loop from the 11th batch of a pass on (bench/insights --scale-db): the read is never
    prepared, and its rows stay the same from the first time to the twelfth."""
    with psycopg.connect(world) as conn:
        first = load_day(conn, registry().residents, date(2026, 11, 23))[0]
        for _ in range(11):
            again = load_day(conn, registry().residents, date(2026, 11, 23))[0]
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%trygg.events%%'"
                                ).fetchone()
    assert prepared == (0,)
    assert len(again) == len(first) and (again.t == first.t).all()


def test_the_database_backend_of_a_pass_works_at_the_lower_priority_of_the_pass(world: str) -> None:
    """Most of a pass's CPU is PostgreSQL's: on this machine its backend is niced like the
    pass's own process (trygg/isolated.py CHILD_NICE)."""
    with psycopg.connect(world) as conn:
        said = nice_backend(conn)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        stat = Path(f"/proc/{pid[0]}/stat").read_text().rsplit(")", 1)[1].split()
    assert said == f"nice {CHILD_NICE}"
    assert int(stat[16]) == CHILD_NICE  # field 19 of proc(5), the nice value


def test_a_pass_rests_as_long_as_its_batches_worked_at_half_a_core() -> None:
    """The rest counts the batch's whole time (the pass's CPU and PostgreSQL's take turns),
    not only this process's CPU, which was a quarter of it."""
    started = time_module.monotonic()
    _rest(Job("", PARAMS, cpu_share=0.5), 0.4)
    assert time_module.monotonic() - started >= 0.39


def test_settings_map_to_the_params() -> None:
    params = params_of(Settings(insights_min_days=7, insights_slow_h=9.5))
    assert (params.min_days, params.slow_h, params.baseline_days) == (7, 9.5, 42)
    assert params_of(Settings()) == Params()  # the settings' defaults are the core's


@pytest.mark.parametrize("which", ["SLOW", "FAST"])
def test_a_cusum_that_could_never_reach_its_limit_stops_trygg_at_start(which: str) -> None:
    """A day adds at most z_clip - k to a sum: with k at or above z_clip no notice could
    ever come, and staff would be told nothing while believing they are watched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32,
                f"TRYGG_INSIGHTS_{which}_K": "2.5"})
    result = subprocess.run([sys.executable, "-m", "trygg", "up"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"trygg: invalid setting settings: TRYGG_INSIGHTS_{which}_K (2.5) is not below TRYGG_INSIGHTS_Z_CLIP (2): "
        "its sum could never reach its limit"]


def test_the_task_of_trygg_up_runs_passes_in_a_child_and_stops(pool: Pool, database: str) -> None:
    now = datetime.now(UTC)
    seed(pool, now.date() - timedelta(days=3), now.date())
    settings = Settings(insights_interval_s=3600, insights_cpu_share=0.5)

    def states() -> int:
        with pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM trygg.insight_state").fetchone()
        return int(row[0]) if row else 0

    async def scenario() -> None:
        task = asyncio.create_task(keep_insights(settings, database, first_after_s=0))
        try:
            await asyncio.to_thread(wait_for, states, lambda n: n == 2, 60)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    with pool.connection() as conn:
        assert conn.execute("SELECT count(DISTINCT resident_id) FROM trygg.insight_days").fetchone() == (2,)
