"""Early signs of decline in PostgreSQL (migration 0019; docs/storage.md "Insights"): the
events of many resident-days read as one columnar `trygg.insights.Events`, and the daily
features, baseline states and notices written back.

Reading is the hot part: a day of 100,000 residents is some 20 million event rows. No
Python object is made per row: PostgreSQL packs each resident's rows into one bytea of
fixed-width big-endian records (int4send, float8send, ...: no NULLs), and numpy reads them
straight from the bytes with a structured dtype. (A binary COPY would send a message per
row, each read by psycopg in Python: 1.4 s of 2 s of CPU for 1.4 million rows.) Everything
per row happens in SQL or numpy: a resident's row number is the ordinality of its id in the
batch, a motion event's room is its `data.room` (else the sensor's registry room) coded by
a small table of names, a door event leads out by `data.door` (`trygg.insights.EXIT_DOORS`),
and a heard hour comes from the hourly rollup (trygg.device_hourly, for the hours
maintenance has closed) or from the raw heartbeats (the hours since).

Writing happens in one transaction per batch: the days, the notices (a notice already
stored for that resident, feature and day is kept as it is: ON CONFLICT DO NOTHING, so a
recompute never takes away who saw it) and the states the next day goes on from.

The daily job and `trygg insights recompute` take `LOCK_KEY` (session advisory lock), so
one of them works at a time in the whole cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import numpy as np
import psycopg

from trygg.insights import (
    BATHROOM_NAMES,
    EXIT_DOORS,
    FEATURES,
    ROOM_BATHROOM,
    Bands,
    Daily,
    Events,
    Frames,
    Kind,
    Notice,
)

Connection = psycopg.Connection[tuple[Any, ...]]

#: pg advisory lock key of the daily job and of a recompute: "insig" in ASCII
LOCK_KEY: Final = 0x696E736967
#: device kinds whose rows and heartbeats are the activity sensors' (the quality check)
ACTIVITY_KINDS: Final = frozenset({"motion_sensor", "door_sensor"})
#: room codes of names met only in events (not in the batch's table) start here:
#: a hash of the name, so the same name gets the same code within a batch
HASHED_ROOMS: Final = 16384
#: room names given codes of their own in every batch, besides the registry's
COMMON_ROOMS: Final = ("bedroom", "kitchen", "living room", "hall", "hallway", "entrance", "dining room",
                       "soverom", "kjøkken", "stue", "gang", "entré", "spisestue", "vaskerom", "kontor")

#: work_mem of the query that reads a batch's events (its hash joins hold the batch's rows)
READ_WORK_MEM: Final = "128MB"
#: a record of `_EVENTS`: the columns' binary forms (int4send, float8send, ...), packed
_RECORD: Final = np.dtype([("row", ">i4"), ("t", ">f8"), ("kind", ">i2"), ("device", ">i4"), ("room", ">i2"),
                           ("exit", "u1"), ("lat", ">f8"), ("lon", ">f8"), ("accuracy_m", ">f4")])

_EVENT_TYPES: Final = ("motion", "door.opened", "door.closed", "door.unlocked", "door.locked", "alarm.button",
                       "location")

# The rows of a batch: its events (by resident and time range: the index (resident_id, ts)),
# then the heard hours of its activity sensors, packed per resident into one bytea of
# fixed-width big-endian records (`_RECORD`): a few thousand result rows for a million
# events, where a COPY sends a message per row (and psycopg reads each in Python).
# Unordered within a resident: numpy sorts them (`_sorted`).
_EVENTS: Final = f"""
WITH r AS (
    SELECT (u.n - 1)::int4 AS row, u.id, to_timestamp(u.lo) AS lo, to_timestamp(u.hi) AS hi, u.located
    FROM unnest(%(ids)s::text[], %(lo)s::float8[], %(hi)s::float8[], %(located)s::bool[])
         WITH ORDINALITY AS u(id, lo, hi, located, n)
), d AS (
    SELECT u.id, u.row, u.n::int4 AS n, u.room, u.heard
    FROM unnest(%(dev_ids)s::text[], %(dev_rows)s::int4[], %(dev_rooms)s::int2[], %(dev_heard)s::bool[])
         WITH ORDINALITY AS u(id, row, room, heard, n)
), names AS (
    SELECT u.name, u.code FROM unnest(%(names)s::text[], %(codes)s::int2[]) AS u(name, code)
), rolled AS (
    SELECT coalesce((SELECT hourly_until FROM trygg.device_rollup_state), '-infinity') AS until
)
SELECT x.row, string_agg(int4send(x.row) || float8send(x.t) || int2send(x.kind) || int4send(x.device)
                         || int2send(x.room) || boolsend(x.exit) || float8send(x.lat) || float8send(x.lon)
                         || float4send(x.acc), ''::bytea)
FROM (
SELECT e.row, extract(epoch FROM e.ts)::float8 AS t,
       (CASE e.type WHEN 'motion' THEN {Kind.MOTION} WHEN 'door.opened' THEN {Kind.DOOR_OPENED}
                    WHEN 'door.closed' THEN {Kind.DOOR_CLOSED} WHEN 'alarm.button' THEN {Kind.BUTTON}
                    WHEN 'location' THEN {Kind.LOCATION} ELSE {Kind.LOCK} END)::int2 AS kind,
       coalesce(d.n, 0) AS device,
       (CASE WHEN e.type <> 'motion' THEN 0
             WHEN e.room IS NULL THEN coalesce(d.room, 0)
             ELSE coalesce(nm.code, {HASHED_ROOMS} + (hashtext(e.room) & 16383)) END)::int2 AS room,
       e.type IN ('door.opened', 'door.closed') AND coalesce(e.door, 'front') = ANY(%(exits)s::text[]) AS exit,
       CASE WHEN e.type = 'location' THEN coalesce((e.data ->> 'lat')::float8, 'NaN') ELSE 'NaN' END AS lat,
       CASE WHEN e.type = 'location' THEN coalesce((e.data ->> 'lon')::float8, 'NaN') ELSE 'NaN' END AS lon,
       CASE WHEN e.type = 'location' THEN coalesce((e.data ->> 'accuracy_m')::float4, 'NaN') ELSE 'NaN' END AS acc
FROM (
    SELECT r.row, ev.ts, ev.type, ev.device_id, ev.data,
           CASE WHEN ev.type = 'motion' THEN lower(btrim(ev.data ->> 'room')) END AS room,
           CASE WHEN ev.type IN ('door.opened', 'door.closed') THEN lower(btrim(ev.data ->> 'door')) END AS door
    FROM r JOIN trygg.events ev ON ev.resident_id = r.id AND ev.ts >= r.lo AND ev.ts < r.hi
    WHERE ev.type = ANY(%(types)s::text[]) AND (ev.type <> 'location' OR r.located)
      AND ev.ts >= to_timestamp(%(lo_all)s) AND ev.ts < to_timestamp(%(hi_all)s)  -- the partitions of the batch
) e
LEFT JOIN d ON d.id = e.device_id
LEFT JOIN names nm ON nm.name = e.room
UNION ALL
SELECT d.row, extract(epoch FROM h.hour)::float8 + 1800, {Kind.HEARD}::int2, d.n, 0::int2, false,
       'NaN'::float8, 'NaN'::float8, 'NaN'::float4
FROM d JOIN r ON r.row = d.row CROSS JOIN rolled
JOIN trygg.device_hourly h ON h.hour >= date_trunc('hour', r.lo, 'UTC') AND h.hour < least(r.hi, rolled.until)
WHERE d.heard AND h.device_id = d.id AND h.heartbeats > 0
UNION ALL
SELECT d.row, extract(epoch FROM b.hour)::float8 + 1800, {Kind.HEARD}::int2, d.n, 0::int2, false,
       'NaN'::float8, 'NaN'::float8, 'NaN'::float4
FROM d JOIN r ON r.row = d.row CROSS JOIN rolled CROSS JOIN
LATERAL (SELECT DISTINCT date_trunc('hour', hb.ts, 'UTC') AS hour FROM trygg.heartbeats hb
         WHERE hb.device_id = d.id AND hb.ts >= greatest(date_trunc('hour', r.lo, 'UTC'), rolled.until)
           AND hb.ts < r.hi) b
WHERE d.heard
) x
GROUP BY x.row
"""


@dataclass(frozen=True, slots=True)
class Sensor:
    """A device of the batch, from the registry: whose (`row`: the resident's frame), what
    kind, in which room."""

    device_id: str
    row: int
    kind: str
    room: str | None = None


class RecordFormatError(ValueError):
    """The packed records did not have the expected shape."""


def room_table(rooms: Iterable[str | None]) -> dict[str, int]:
    """Codes of room names (lower case, trimmed) for a batch: the bathroom names
    `ROOM_BATHROOM`, every other name a code of its own (2, 3, ...) — codes distinct in
    the whole batch are distinct within each resident (`trygg.insights.room_code`)."""
    table = {name: ROOM_BATHROOM for name in BATHROOM_NAMES}
    for name in (*COMMON_ROOMS, *rooms):
        if name and name.strip():
            key = name.strip().lower()
            if key not in table and len(table) < HASHED_ROOMS - 2:
                table[key] = len(table) - len(BATHROOM_NAMES) + 2
    return table


def read_events(conn: Connection, resident_ids: Sequence[str], frames: Frames, sensors: Sequence[Sensor]) -> Events:
    """The rows of each frame's resident in [min(night_start, day_start), max(day_end, night_end)),
    sorted by (row, t): frame i is `resident_ids[i]`. Location rows only for frames that
    are `located`; heard hours only of motion and door sensors (`ACTIVITY_KINDS`) among
    `sensors`; `device` is a sensor's place in `sensors` plus one (0: a device the
    registry does not list for the resident)."""
    n = len(resident_ids)
    if n == 0:
        return Events.empty()
    if len(frames) != n:
        raise ValueError(f"{len(frames)} frames for {n} residents")
    table = room_table(s.room for s in sensors)
    params = {
        "ids": list(resident_ids),
        "lo": np.minimum(frames.night_start, frames.day_start).tolist(),
        "hi": np.maximum(frames.night_end, frames.day_end).tolist(),
        "located": frames.located.tolist(),
        "lo_all": float(np.minimum(frames.night_start, frames.day_start).min()),
        "hi_all": float(np.maximum(frames.night_end, frames.day_end).max()),
        "dev_ids": [s.device_id for s in sensors],
        "dev_rows": [s.row for s in sensors],
        "dev_rooms": [table.get(s.room.strip().lower(), 0) if s.room else 0 for s in sensors],
        "dev_heard": [s.kind in ACTIVITY_KINDS for s in sensors],
        "names": list(table),
        "codes": list(table.values()),
        "exits": sorted(EXIT_DOORS),
        "types": list(_EVENT_TYPES),
    }
    with conn.transaction(), conn.cursor(binary=True) as cur:
        # no JIT: compiling the query cost more than running it (2 s of 6 for 5,000
        # residents); memory enough for the hash joins of a batch's rows not to spill
        # and a plan made for this batch's ids: after a few runs on one connection a prepared
        # statement's generic plan guessed 10 rows per id list and joined a million rows by
        # nested loop (the 11th batch of a pass still ran after 9 minutes)
        cur.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true),"
                    " set_config('plan_cache_mode', 'force_custom_plan', true)", (READ_WORK_MEM,))
        cur.execute(_EVENTS, params, prepare=False)
        data = b"".join(bytes(r[1]) for r in cur)
    return _sorted(parse_records(data))


def parse_records(data: bytes) -> Events:
    """`Events` from the packed records of `_EVENTS` (unsorted)."""
    if len(data) % _RECORD.itemsize:
        raise RecordFormatError(f"{len(data)} bytes is not a whole number of {_RECORD.itemsize}-byte records")
    raw = np.frombuffer(data, _RECORD)
    return Events(
        row=raw["row"].astype(np.int32), t=raw["t"].astype(np.float64), kind=raw["kind"].astype(np.int8),
        device=raw["device"].astype(np.int32), room=raw["room"].astype(np.int16), exit=raw["exit"].astype(np.bool_),
        lat=raw["lat"].astype(np.float64), lon=raw["lon"].astype(np.float64),
        accuracy_m=raw["accuracy_m"].astype(np.float32))


def _sorted(events: Events) -> Events:
    """Ordered by (row, t) (a stable sort: rows of equal time keep their order)."""
    if len(events) < 2:
        return events
    row, t = events.row, events.t
    if bool(((row[1:] > row[:-1]) | ((row[1:] == row[:-1]) & (t[1:] >= t[:-1]))).all()):
        return events
    order = np.lexsort((t, row))
    return Events(*(getattr(events, name)[order] for name in Events.__slots__))


# --- the job's state --------------------------------------------------------------------

def try_lock(conn: Connection) -> bool:
    """Take the job's advisory lock on this connection if nobody holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def lock(conn: Connection) -> None:
    """Wait for the job's advisory lock (a recompute waits for a running pass)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))


def unlock(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def read_progress(conn: Connection, resident_ids: Sequence[str]) -> dict[str, date]:
    """The last day computed of each resident that has a state (`through_day`)."""
    rows = conn.execute("SELECT resident_id, through_day FROM trygg.insight_state WHERE resident_id = ANY(%s)",
                        (list(resident_ids),)).fetchall()
    return {str(r[0]): r[1] for r in rows}


def first_event_days(conn: Connection, resident_ids: Sequence[str], zones: Sequence[str],
                     since: date) -> dict[str, date]:
    """The local day (in each resident's zone) of the resident's first stored event on or
    after `since` (UTC midnight), for those that have one: where a new resident's days begin.
    One index probe per resident and partition of the range."""
    rows = conn.execute(
        "SELECT u.id, (first.ts AT TIME ZONE u.zone)::date FROM unnest(%s::text[], %s::text[]) AS u(id, zone),"
        " LATERAL (SELECT e.ts FROM trygg.events e WHERE e.resident_id = u.id AND e.ts >= %s::date::timestamp"
        " AT TIME ZONE 'UTC' ORDER BY e.ts LIMIT 1) first",
        (list(resident_ids), list(zones), since)).fetchall()
    return {str(r[0]): r[1] for r in rows}


def read_states(conn: Connection, resident_ids: Sequence[str]) -> list[bytes | None]:
    """Each resident's stored state (None: never computed), in the order given."""
    rows = conn.execute("SELECT resident_id, state FROM trygg.insight_state WHERE resident_id = ANY(%s)",
                        (list(resident_ids),)).fetchall()
    found = {str(r[0]): bytes(r[1]) for r in rows}
    return [found.get(rid) for rid in resident_ids]


def _nullable(values: np.ndarray[Any, Any]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def write_results(conn: Connection, resident_ids: Sequence[str], days: Sequence[date], daily: Daily, bands: Bands,
                  notices: Sequence[Notice], states: Sequence[bytes]) -> None:
    """Store one computed day of each resident — row i is `resident_ids[i]` on `days[i]` —
    in one transaction: its features and band (replacing a row of the same day), the
    notices raised (kept as they are when already stored), and the state after that
    day. The partitions of the days are made when missing."""
    n = len(resident_ids)
    if not (len(days) == len(daily.values) == len(bands.usual) == len(states) == n):
        raise ValueError("resident_ids, days, daily, bands and states must have one row per resident")
    if n == 0:
        return
    with conn.transaction(), conn.cursor() as cur:
        low, high = min(days), max(days)
        cur.execute("SELECT trygg.ensure_partitions('trygg.insight_days', %s::date, %s::date)", (low, high))
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS insight_days_in (LIKE trygg.insight_days"
                    " EXCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        cur.execute("TRUNCATE insight_days_in")
        with cur.copy("COPY insight_days_in (resident_id, day, vals, usual, band_low, band_high,"
                      " hours_unheard, usable, away, computed_at) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((resident_ids[i], days[i], _nullable(daily.values[i]), _nullable(bands.usual[i]),
                                _nullable(bands.low[i]), _nullable(bands.high[i]), int(daily.hours_unheard[i]),
                                bool(daily.usable[i]), bool(daily.away[i]), "now"))
        cur.execute(
            "INSERT INTO trygg.insight_days (resident_id, day, vals, usual, band_low, band_high, hours_unheard,"
            " usable, away, computed_at)"
            " SELECT resident_id, day, vals, usual, band_low, band_high, hours_unheard, usable, away, now()"
            " FROM insight_days_in"
            " ON CONFLICT (resident_id, day) DO UPDATE SET vals = excluded.vals, usual = excluded.usual,"
            " band_low = excluded.band_low, band_high = excluded.band_high,"
            " hours_unheard = excluded.hours_unheard, usable = excluded.usable, away = excluded.away,"
            " computed_at = excluded.computed_at")
        if notices:
            cur.executemany(
                "INSERT INTO trygg.insight_notices (resident_id, feature, direction, day, value, usual, band_low,"
                " band_high, window_days, reason_nb, reason_en) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (resident_id, feature, day) DO NOTHING",
                [(resident_ids[x.row], x.feature, int(x.direction), days[x.row], x.value, x.usual, x.low, x.high,
                  x.window_days, x.reason_nb, x.reason_en) for x in notices])
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS insight_state_in (LIKE trygg.insight_state"
                    " EXCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        cur.execute("TRUNCATE insight_state_in")
        with cur.copy("COPY insight_state_in (resident_id, through_day, state, updated_at) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((resident_ids[i], days[i], states[i], "now"))
        cur.execute(
            "INSERT INTO trygg.insight_state (resident_id, through_day, state, updated_at)"
            " SELECT resident_id, through_day, state, now() FROM insight_state_in"
            " ON CONFLICT (resident_id) DO UPDATE SET through_day = excluded.through_day,"
            " state = excluded.state, updated_at = excluded.updated_at")


def forget(conn: Connection, resident_ids: Sequence[str] | None, since: date) -> dict[str, int]:
    """Before a recompute from `since`: the days from then on, the notices from then on
    that nobody has seen yet (seen ones are kept, with who saw them and the note), and the
    states (the baselines start anew). `resident_ids` None: every resident. One
    transaction; returns the rows removed per table."""
    every = resident_ids is None
    ids = [] if resident_ids is None else list(resident_ids)
    with conn.transaction():
        days = conn.execute("DELETE FROM trygg.insight_days WHERE (%s OR resident_id = ANY(%s)) AND day >= %s",
                            (every, ids, since)).rowcount
        notices = conn.execute("DELETE FROM trygg.insight_notices WHERE (%s OR resident_id = ANY(%s))"
                               " AND day >= %s AND seen_at IS NULL", (every, ids, since)).rowcount
        states = conn.execute("DELETE FROM trygg.insight_state WHERE %s OR resident_id = ANY(%s)",
                              (every, ids)).rowcount
    return {"days": days, "notices": notices, "states": states}


#: the features' names in column order (the arrays of trygg.insight_days)
FEATURE_NAMES: Final = tuple(f.name for f in FEATURES)

__all__ = ["ACTIVITY_KINDS", "FEATURE_NAMES", "LOCK_KEY", "RecordFormatError", "Sensor", "first_event_days",
           "forget", "lock", "parse_records", "read_events", "read_progress", "read_states", "room_table",
           "try_lock", "unlock", "write_results"]
