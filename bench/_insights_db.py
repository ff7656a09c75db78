"""One day of the insights job over a whole municipality in PostgreSQL (issue 19), for
`bench/insights --scale-db N`: a scratch database of its own (`trygg_bench_insights`,
dropped and re-created; no other database is touched), migrated with `storage.migrate`,
holding what the daily job finds at half past midnight:

- the registry of N residents from `simulators.decline.Municipality(N, 2, seed)`, saved
  through `storage.save_registry`: motion sensors named by room (bedroom, bathroom,
  kitchen, living_room, hallway, as the kit has them), a door sensor on the front door,
  an alarm unit, a GPS tracker with a location basis for a quarter of those with a door
  sensor; the simulator's night windows (23–06 or 22–07) and its registry absences;
- the day's events (from the night window the evening before to local midnight) in
  `trygg.events`, in time order as the gateway stores them (so a resident's rows lie
  scattered over the heap), through a binary COPY into a staging table per million rows;
- the activity sensors' heard hours in `trygg.device_hourly` (60 heartbeats an hour
  heard), closed by maintenance up to local midnight (`trygg.device_rollup_state`), as
  maintenance leaves them five minutes after each hour: the job reads no raw heartbeat
  of the day then;
- baseline states through the day before: the day's features with day-to-day noise
  advanced over 35 days (`processors.insights.advance`), stored by
  `storage.insights_store.write_results` with the last of those days, and the 34 days
  before it copied into `trygg.insight_days` (a table with history for the upserts).

`reset` puts the states back as they were before the day (a copy in `bench.state_before`)
so the day can be computed again. `time_day` computes it as the daily job does
(`composition.insights.due_days`, then `compute_day` per batch of residents sorted by id)
and measures the reading, computing and writing apart by wrapping the functions
`compute_day` calls (`load_day`, `read_states`, `write_results`): their wall time, this
process's CPU and the CPU of the connection's PostgreSQL backend (/proc/<pid>/stat).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "trygg_bench_insights"
HISTORY_DAYS = 35
#: the daily job's pass starts this long after the resident's local midnight
PASS_AT = timedelta(minutes=30)
#: staging rows per COPY (and per INSERT into trygg.events)
CHUNK = 1_000_000

Log = Callable[[str], None]


def say(line: str) -> None:
    print(line, flush=True)


def resident_id(i: int) -> str:
    return f"r{i:06d}"


@dataclass(frozen=True)
class Scratch:
    url: str
    day: date
    now: datetime  # the pass's clock: half past midnight after `day`, Oslo time
    residents: int


def scratch_url(admin_url: str, name: str = DEFAULT_DB) -> str:
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop(admin_url: str, name: str = DEFAULT_DB) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pass_clock(day: date, zone: str) -> datetime:
    return (datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(zone)) + PASS_AT).astimezone(UTC)


# --- the registry -------------------------------------------------------------------------

def registry_document(m: Any, day_index: int) -> dict[str, Any]:
    """The simulated residents as a registry document (docs/contract.md §3): row i is
    `resident_id(i)`, its devices `<id>-<name>` (simulators.decline.DEVICE_NAMES)."""
    from simulators.decline import ALARM, DOOR, HALL, TRACKER

    rooms = ("bedroom", "bathroom", "kitchen", "living_room", "hallway")
    away: dict[int, list[dict[str, Any]]] = {}
    for (i, first, last), reason in zip(m.absent, m.absent_reason, strict=True):
        if first <= day_index and last >= 0:
            away.setdefault(int(i), []).append({"start": str(m.date(int(first))), "end": str(m.date(int(last))),
                                                "reason": str(reason)})
    people = []
    for i in range(m.n):
        rid = resident_id(i)
        devices: list[dict[str, Any]] = [{"id": f"{rid}-{rooms[k]}", "kind": "motion_sensor", "room": rooms[k]}
                                         for k in range(HALL + 1) if m.has[i, k]]
        if m.has[i, DOOR]:
            devices.append({"id": f"{rid}-door", "kind": "door_sensor", "room": "front"})
        if m.has[i, ALARM]:
            devices.append({"id": f"{rid}-alarm_unit", "kind": "alarm_unit"})
        person: dict[str, Any] = {"id": rid, "name": f"Resident {i}", "team": f"team-{i % 20:02d}",
                                  "timezone": m.zone, "devices": devices,
                                  "night": {"start": "22:00", "end": "07:00"} if m.night_kind[i] else {}}
        if m.has[i, TRACKER]:
            devices.append({"id": f"{rid}-tracker", "kind": "gps_tracker"})
            person["location_basis"] = {"kind": "vedtak"}
        if i in away:
            person["absences"] = away[i]
        people.append(person)
    return {"teams": [{"id": f"team-{t:02d}", "name": f"Team {t}"} for t in range(20)], "residents": people}


# --- the day's rows -----------------------------------------------------------------------

_STAGE = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE UNLOGGED TABLE IF NOT EXISTS bench.sim (
    rid int4 NOT NULL, t float8 NOT NULL, kind int2 NOT NULL, dev int2 NOT NULL,
    lat float8 NOT NULL, lon float8 NOT NULL, acc float4 NOT NULL
);
TRUNCATE bench.sim;
"""

# device names as simulators.decline.DEVICE_NAMES (rooms with underscores, as the registry)
_DEVICE = ("(ARRAY['bedroom','bathroom','kitchen','living_room','hallway','door','alarm_unit','tracker'])"
           "[s.dev + 1]")

_EVENTS = f"""
INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)
SELECT 'r' || lpad(s.rid::text, 6, '0') || '-' || {_DEVICE},
       md5(s.rid::text || '/' || s.t::text || '/' || s.kind::text),
       'r' || lpad(s.rid::text, 6, '0'),
       CASE s.kind WHEN 1 THEN 'motion' WHEN 2 THEN 'door.opened' WHEN 3 THEN 'door.closed'
                   WHEN 5 THEN 'alarm.button' ELSE 'location' END,
       to_timestamp(s.t), to_timestamp(s.t + 0.3),
       CASE s.kind WHEN 1 THEN jsonb_build_object('room', {_DEVICE})
                   WHEN 2 THEN '{{"door": "front"}}'::jsonb WHEN 3 THEN '{{"door": "front"}}'::jsonb
                   WHEN 6 THEN jsonb_build_object('lat', round(s.lat::numeric, 6), 'lon', round(s.lon::numeric, 6),
                                                  'accuracy_m', round(s.acc::numeric, 1))
                   ELSE '{{}}'::jsonb END
FROM bench.sim s
ORDER BY s.t
"""

_HEARD = f"""
INSERT INTO trygg.device_hourly (device_id, hour, heartbeats, battery_min, battery_max, battery_last)
SELECT 'r' || lpad(s.rid::text, 6, '0') || '-' || {_DEVICE},
       to_timestamp(floor(s.t / 3600) * 3600), 60, 90::int2, 90::int2, 90::int2
FROM bench.sim s
ORDER BY 2, 1
"""

_COPY_DTYPE = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("rid", ">i4"), ("l1", ">i4"), ("t", ">f8"),
                        ("l2", ">i4"), ("kind", ">i2"), ("l3", ">i4"), ("dev", ">i2"), ("l4", ">i4"),
                        ("lat", ">f8"), ("l5", ">i4"), ("lon", ">f8"), ("l6", ">i4"), ("acc", ">f4")])


def _copy_stage(conn: psycopg.Connection[Any], rid: np.ndarray, t: np.ndarray, kind: np.ndarray, dev: np.ndarray,
                lat: np.ndarray, lon: np.ndarray, acc: np.ndarray) -> None:
    """Rows into bench.sim by binary COPY, built by numpy (no Python object per row)."""
    rec = np.zeros(len(t), _COPY_DTYPE)
    rec["nf"] = 7
    for name, size in (("l0", 4), ("l1", 8), ("l2", 2), ("l3", 2), ("l4", 8), ("l5", 8), ("l6", 4)):
        rec[name] = size
    rec["rid"], rec["t"], rec["kind"], rec["dev"], rec["lat"], rec["lon"], rec["acc"] = rid, t, kind, dev, lat, lon, acc
    conn.execute("TRUNCATE bench.sim")
    with conn.cursor() as cur, cur.copy("COPY bench.sim FROM STDIN (FORMAT binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + rec.tobytes() + b"\xff\xff")


def load_rows(conn: psycopg.Connection[Any], events: Any, log: Log) -> tuple[int, int]:
    """The simulated rows of the day: events into trygg.events in time order, heard hours
    into trygg.device_hourly. Returns (events, heard hours)."""
    from simulators.decline import DEVICE_NAMES
    from trygg.insights import Kind

    conn.execute(_STAGE)
    rid = events.row.astype(np.int32)
    dev = (events.device - events.row * len(DEVICE_NAMES)).astype(np.int16)  # the simulator's device numbers
    heard = events.kind == Kind.HEARD
    stored = np.flatnonzero(~heard)
    stored = stored[np.argsort(events.t[stored], kind="stable")]
    t0, done = time.monotonic(), 0
    for start in range(0, len(stored), CHUNK):
        ix = stored[start:start + CHUNK]
        _copy_stage(conn, rid[ix], events.t[ix], events.kind[ix].astype(np.int16), dev[ix], events.lat[ix],
                    events.lon[ix], events.accuracy_m[ix])
        conn.execute(_EVENTS)
        done += len(ix)
        s = time.monotonic() - t0
        log(f"  events: {done:>11,} of {len(stored):,} in {s:6.1f} s ({done / max(s, 1e-9):>8,.0f} rows/s)")
    ix = np.flatnonzero(heard)
    t0 = time.monotonic()
    nan = np.full(len(ix), np.nan)
    _copy_stage(conn, rid[ix], events.t[ix], events.kind[ix].astype(np.int16), dev[ix], nan, nan,
                nan.astype(np.float32))
    hours = conn.execute(_HEARD).rowcount
    conn.execute("DROP TABLE bench.sim")
    log(f"  heard hours: {hours:,} rows of trygg.device_hourly in {time.monotonic() - t0:.1f} s")
    return len(stored), hours


# --- the states the day goes on from ----------------------------------------------------

def load_states(conn: psycopg.Connection[Any], batch: Any, ids: list[str], seed: int, log: Log) -> int:
    """Baselines through the day before `batch.day`: the day's own features with
    day-to-day noise, advanced over HISTORY_DAYS days (the last one stored by
    `write_results`, the others copied into trygg.insight_days). Returns the notices."""
    from processors.insights import States, advance, daily_features
    from storage.insights_store import write_results
    from trygg.insights import FEATURES, Daily, Params

    params = Params()
    n = len(ids)
    t0 = time.monotonic()
    daily = daily_features(batch.events, batch.frames, params)
    states = States.load([None] * n, params)
    rng = np.random.default_rng([seed, 35])
    spread = np.array([f.min_scale for f in FEATURES]) * 1.5
    known = ~np.isnan(daily.values)
    base = np.nan_to_num(daily.values, nan=1.0)
    today = batch.day.toordinal()
    notices: list[Any] = []
    for k in range(HISTORY_DAYS, 0, -1):
        values = np.where(known, base + rng.normal(0, 1, base.shape) * spread, np.nan)
        noisy = Daily(values, daily.hours_unheard, daily.usable, daily.away)
        raised, bands = advance(states, noisy, np.full(n, today - k, np.int32), params)
        notices += raised
        if k % 5 == 0:
            log(f"  baselines: {HISTORY_DAYS - k + 1} of {HISTORY_DAYS} days advanced in "
                f"{time.monotonic() - t0:.0f} s")
    last = batch.day - timedelta(days=1)
    write_results(conn, ids, [last] * n, noisy, bands, raised, states.blobs())
    first = batch.day - timedelta(days=HISTORY_DAYS)
    conn.execute("SELECT trygg.ensure_partitions('trygg.insight_days', %s::date, %s::date)", (first, batch.day))
    conn.execute("INSERT INTO trygg.insight_days SELECT d.resident_id, g.day::date, d.vals, d.usual, d.band_low,"
                 " d.band_high, d.hours_unheard, d.usable, d.away, d.computed_at - (%s::date - g.day::date)"
                 " * interval '1 day' FROM trygg.insight_days d, generate_series(%s::date, %s::date - 1,"
                 " interval '1 day') AS g(day) WHERE d.day = %s", (last, first, last, last))
    log(f"  states through {last} and {HISTORY_DAYS} days of trygg.insight_days in {time.monotonic() - t0:.0f} s "
        f"({len(notices)} notices on the way, those of the last day stored)")
    return len(notices)


def build(admin_url: str, n: int, seed: int, *, name: str = DEFAULT_DB, log: Log = say) -> Scratch:
    """The scratch database `name` holding day `today - 2` (UTC) of `n` residents."""
    from simulators.decline import Municipality
    from storage import save_registry
    from storage.maintenance import HOUR_CLOSE_AFTER, floor_hour
    from tests.fix_db import migrate_url
    from trygg.registry import validate_registry

    drop(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = scratch_url(admin_url, name)
    migrate_url(url)
    day = datetime.now(UTC).date() - timedelta(days=2)
    t0 = time.monotonic()
    m = Municipality(n, 2, seed, start=day - timedelta(days=1))
    batch = m.day(1)
    log(f"simulated {day} of {n:,} residents: {len(batch.events):,} rows (heard hours among them) in "
        f"{time.monotonic() - t0:.0f} s")
    t0 = time.monotonic()
    reg = validate_registry(registry_document(m, 1))
    ids = [r.id for r in reg.residents]
    with psycopg.connect(url) as conn:
        save_registry(conn, reg, actor="bench")
        conn.commit()
    log(f"registry of {n:,} residents, {sum(len(r.devices) for r in reg.residents):,} devices saved in "
        f"{time.monotonic() - t0:.0f} s")
    del reg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        lo, hi = day - timedelta(days=2), day + timedelta(days=3)
        for parent in ("trygg.events", "trygg.device_hourly", "trygg.heartbeats", "trygg.insight_days"):
            conn.execute("SELECT trygg.ensure_partitions(%s, %s::date, %s::date)", (parent, lo, hi))
        t0 = time.monotonic()
        load_rows(conn, batch.events, log)
        now = pass_clock(day, m.zone)
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = %s",
                     (floor_hour(now - HOUR_CLOSE_AFTER), day + timedelta(days=1)))
        conn.execute("VACUUM (ANALYZE) trygg.events, trygg.device_hourly")
        log(f"  vacuumed and analyzed; rows stored in {time.monotonic() - t0:.0f} s")
        load_states(conn, batch, ids, seed, log)
        conn.execute("VACUUM (ANALYZE) trygg.insight_days, trygg.insight_state, trygg.insight_notices")
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute("CREATE TABLE bench.state_before AS SELECT * FROM trygg.insight_state")
        conn.execute("CREATE TABLE bench.scratch AS SELECT %s::date AS day, %s::timestamptz AS now,"
                     " %s::int AS residents", (day, now, n))
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    log(f"scratch database {name}: {size[0] if size else '?'}")
    return Scratch(url, day, now, n)


def loaded(admin_url: str, name: str = DEFAULT_DB) -> Scratch:
    """The scratch database left by an earlier `build` (`--reuse`)."""
    url = scratch_url(admin_url, name)
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT day, now, residents FROM bench.scratch").fetchone()
    except psycopg.Error as exc:
        raise SystemExit(f"--reuse: no scratch database {name} to reuse ({str(exc).strip()})") from None
    assert row is not None
    return Scratch(url, row[0], row[1], int(row[2]))


def custom_plans(scratch: Scratch) -> Scratch:
    """The scratch database through connections that never use a generic plan: the read of
    a batch (storage.insights_store.read_events) is prepared by psycopg after 5 executions
    (prepare_threshold), and after 5 more PostgreSQL may switch to its generic plan, which
    guesses 10 residents for each unnest and joins a batch's million rows to its devices
    by a nested loop (the 11th batch of 5,000 ran over 9 minutes instead of 7 s)."""
    url = psycopg.conninfo.make_conninfo(scratch.url, options="-c plan_cache_mode=force_custom_plan")
    return Scratch(url, scratch.day, scratch.now, scratch.residents)


def reset(scratch: Scratch) -> None:
    """The states as before the day, the day's rows and notices gone: the day is due again."""
    with psycopg.connect(scratch.url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("DELETE FROM trygg.insight_days WHERE day = %s", (scratch.day,))
            conn.execute("DELETE FROM trygg.insight_notices WHERE day = %s", (scratch.day,))
            conn.execute("DELETE FROM trygg.insight_state")
            conn.execute("INSERT INTO trygg.insight_state SELECT * FROM bench.state_before")
        conn.execute("VACUUM (ANALYZE) trygg.insight_days, trygg.insight_state, trygg.insight_notices")


# --- the timed pass -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a local process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Phase:
    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    pg: float = 0.0


@dataclass
class Meter:
    """Wall, this process's CPU and the backend's CPU, per phase."""

    backend: int
    phases: dict[str, Phase] = field(default_factory=dict)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w, c, p = time.perf_counter(), time.process_time(), backend_cpu(self.backend)
            try:
                return fn(*args, **kwargs)
            finally:
                ph = self.phases.setdefault(name, Phase())
                ph.calls += 1
                ph.wall += time.perf_counter() - w
                ph.cpu += time.process_time() - c
                ph.pg += backend_cpu(self.backend) - p
        return timed


def time_day(url: str, day: date, now: datetime, batch: int = 5000, log: Log = say) -> dict[str, Any]:
    """Compute `day` of every resident as the daily job does, timed (in this process:
    run it in a fresh one for its peak RSS)."""
    import composition.insights as job
    import storage.insights_store as store
    from storage.registry_store import load_registry
    from trygg.insights import Params

    params = Params()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        meter = Meter(int(row[0]))
        job.load_day = meter.wrap("read events", job.load_day)  # type: ignore[assignment]
        store.read_states = meter.wrap("read states", store.read_states)  # type: ignore[assignment]
        store.write_results = meter.wrap("write", store.write_results)  # type: ignore[assignment]
        w0, c0, p0 = time.perf_counter(), time.process_time(), backend_cpu(meter.backend)
        residents = meter.wrap("registry", load_registry)(conn).residents
        pending = meter.wrap("due days", job.due_days)(conn, residents, now)
        if list(pending) != [day]:
            raise SystemExit(f"expected {day} due for everyone, found {sorted(pending)}: reset the database")
        todo = sorted(pending[day], key=lambda r: r.id)
        rows = notices = 0
        for start in range(0, len(todo), batch):
            bw, bc, bp = time.perf_counter(), time.process_time(), backend_cpu(meter.backend)
            done = meter.wrap("compute_day", job.compute_day)(conn, todo[start:start + batch], day, params)
            rows += done.events
            notices += done.notices
            log(f"  {start + done.residents:>7,} of {len(todo):,}: {done.events:>10,} rows, {done.notices:>3} notices "
                f"in {time.perf_counter() - bw:5.1f} s (Python CPU {time.process_time() - bc:5.1f} s, "
                f"PostgreSQL CPU {backend_cpu(meter.backend) - bp:5.1f} s)")
        wall, cpu, pg = time.perf_counter() - w0, time.process_time() - c0, backend_cpu(meter.backend) - p0
    ph = meter.phases
    read = [ph["read events"], ph["read states"]]
    inside = ph["compute_day"]
    compute = Phase(inside.calls, inside.wall - sum(p.wall for p in read) - ph["write"].wall,
                    inside.cpu - sum(p.cpu for p in read) - ph["write"].cpu,
                    inside.pg - sum(p.pg for p in read) - ph["write"].pg)
    split = {"registry": ph["registry"], "due days": ph["due days"], "read events": ph["read events"],
             "read states": ph["read states"], "compute": compute, "write": ph["write"]}
    return {
        "residents": len(todo), "rows_read": rows, "notices": notices, "wall_s": wall, "python_cpu_s": cpu,
        "postgres_cpu_s": pg, "rows_read_per_s": rows / max(ph["read events"].wall, 1e-9),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "split": {k: {"wall_s": v.wall, "python_cpu_s": v.cpu, "postgres_cpu_s": v.pg} for k, v in split.items()},
    }


def time_in_child(scratch: Scratch, batch: int) -> dict[str, Any]:
    """`time_day` in a fresh interpreter (its peak RSS is the job's own); its progress
    lines pass through, its figures come back as JSON on the last line."""
    cmd = [sys.executable, "-m", "bench._insights_db", scratch.url, scratch.day.isoformat(),
           scratch.now.isoformat(), str(batch)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        if line.startswith("{"):
            last = line
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 or not last:
        raise SystemExit(f"the timed pass failed (exit code {proc.returncode})")
    return dict(json.loads(last))


def print_day(fig: dict[str, Any], log: Log = say) -> None:
    log(f"\none day of {fig['residents']:,} residents in PostgreSQL, batches of {fig['batch']:,}: "
        f"{fig['rows_read']:,} rows read, {fig['notices']} notices")
    log(f"  wall {fig['wall_s']:.1f} s; CPU: Python {fig['python_cpu_s']:.1f} s, PostgreSQL backend "
        f"{fig['postgres_cpu_s']:.1f} s (together {fig['python_cpu_s'] + fig['postgres_cpu_s']:.1f} s, budget 300 s "
        f"of one core); rows read {fig['rows_read_per_s']:,.0f}/s (of the read's wall time); peak RSS "
        f"{fig['peak_rss_mib']:.0f} MiB")
    log("  | part | wall s | Python CPU s | PostgreSQL CPU s |\n  | --- | --- | --- | --- |")
    for name, v in fig["split"].items():
        log(f"  | {name} | {v['wall_s']:.1f} | {v['python_cpu_s']:.1f} | {v['postgres_cpu_s']:.1f} |")


# --- alarm latency while the job runs ---------------------------------------------------

def run_latency(seconds: float, presses: int, tag: str, log: Log = say) -> dict[str, Any]:
    """`bench/latency` (its own Mosquitto, PostgreSQL and `trygg up`), its lines shown;
    returns its result file, kept as `latency_<tag>.json`."""
    from bench._services import RESULTS

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "latency"), "--seconds", str(seconds),
                             "--presses", str(presses)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        log(f"  [latency {tag}] {line.rstrip()}")
    if proc.wait() != 0:
        raise SystemExit(f"bench/latency failed (exit code {proc.returncode})")
    result = dict(json.loads((RESULTS / "latency.json").read_text()))
    shutil.copy(RESULTS / "latency.json", RESULTS / f"latency_{tag}.json")
    result["seconds"] = time.monotonic() - t0
    return result


class Busy:
    """The daily job computing the day again and again, as `trygg up` runs a pass
    (`keep_insights`): `run_pass` in a child of its own (trygg.isolated: nice 10), CPU
    share TRYGG_INSIGHTS_CPU_SHARE, batches of TRYGG_INSIGHTS_BATCH; between passes the
    day is made due again (`reset`)."""

    def __init__(self, scratch: Scratch, cpu_share: float, batch: int) -> None:
        from composition.insights import Job
        from trygg.insights import Params

        self.scratch = scratch
        self.folder = tempfile.mkdtemp(prefix="trygg-bench-insights-")
        self.job = Job(scratch.url, Params(), batch=batch, cpu_share=cpu_share, now=scratch.now,
                       stop_path=os.path.join(self.folder, "stop"), log_level="warning")
        self.passes: list[tuple[float, float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="insights-job", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from composition.insights import PASS_TIMEOUT_S, pass_in_child
        from trygg.isolated import run_isolated

        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                report = run_isolated(pass_in_child, self.job, timeout_s=PASS_TIMEOUT_S, name="insights")
                self.passes.append((t0, time.monotonic(), report))
                if not self._stop.is_set():
                    reset(self.scratch)
        except BaseException as exc:  # shown by stop()
            self.error = exc

    def __enter__(self) -> Busy:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with open(self.job.stop_path or "", "w"):
            pass
        self._thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.error is not None:
            raise self.error


def latency_pair(scratch: Scratch, seconds: float, presses: int, cpu_share: float, batch: int,
                 log: Log = say) -> dict[str, Any]:
    """bench/latency alone, then while the job computes the day (started first)."""
    log(f"\nbench/latency alone (--seconds {seconds:g} --presses {presses})")
    alone = run_latency(seconds, presses, "alone", log)
    reset(scratch)
    log(f"\nbench/latency while the daily job computes {scratch.day} of {scratch.residents:,} residents "
        f"(run_pass in trygg.isolated: nice 10, CPU share {cpu_share:g}, batches of {batch:,})")
    with Busy(scratch, cpu_share, batch) as busy:
        t0 = time.monotonic()
        busy_result = run_latency(seconds, presses, "with_insights", log)
        t1 = time.monotonic()
    passes = [{"started_s": round(a - busy.started, 1), "ended_s": round(b - busy.started, 1),
               "resident_days": r.resident_days, "rows": r.events, "wall_s": round(r.seconds, 1),
               "cpu_s": round(r.cpu_seconds, 1), "stopped": r.stopped} for a, b, r in busy.passes]
    for p in passes:
        log(f"  insights pass from {p['started_s']} s to {p['ended_s']} s: {p['resident_days']:,} resident-days, "
            f"{p['rows']:,} rows, CPU {p['cpu_s']} s in {p['wall_s']} s{' (stopped)' if p['stopped'] else ''}")
    log(f"  bench/latency ran from {t0 - busy.started:.1f} s to {t1 - busy.started:.1f} s")
    log("\n| phase | alone p50 / p99 / max ms | with the daily job p50 / p99 / max ms |\n| --- | --- | --- |")
    for key in ("idle", "loaded", "db_down", "idle_sse", "loaded_sse"):
        a, b = alone.get(key, {}), busy_result.get(key, {})
        log(f"| {key} | {a.get('p50_ms')} / {a.get('p99_ms')} / {a.get('max_ms')} | "
            f"{b.get('p50_ms')} / {b.get('p99_ms')} / {b.get('max_ms')} |")
    strip = {"samples_ms"}
    return {"alone": {k: ({kk: vv for kk, vv in v.items() if kk not in strip} if isinstance(v, dict) else v)
                      for k, v in alone.items()},
            "with_insights": {k: ({kk: vv for kk, vv in v.items() if kk not in strip} if isinstance(v, dict) else v)
                              for k, v in busy_result.items()},
            "passes": passes, "latency_window_s": [round(t0 - busy.started, 1), round(t1 - busy.started, 1)]}


def main() -> int:
    """The timed pass in a child: URL DAY NOW BATCH."""
    url, day, now, batch = sys.argv[1:5]
    fig = time_day(url, date.fromisoformat(day), datetime.fromisoformat(now), int(batch))
    fig["batch"] = int(batch)
    print(json.dumps(fig), flush=True)
    return 0


__all__ = ["DEFAULT_DB", "Busy", "Scratch", "backend_cpu", "build", "custom_plans", "drop", "latency_pair", "loaded",
           "pass_clock", "print_day", "reset", "scratch_url", "time_day", "time_in_child"]

if __name__ == "__main__":
    sys.exit(main())
