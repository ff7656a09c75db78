"""TimescaleDB: whether Trygg uses it (the engine decision, taken before any migration and
before any `CREATE EXTENSION`), and the few calls that only exist there (docs/storage.md
"TimescaleDB").

The decision (`decide`) is a pure function of `TRYGG_TIMESCALEDB` and what the server and
the database say (`server_state`); `storage.migrate` takes it, creates the extension when
it says so, and the migrations follow what exists: `trygg.events` becomes a hypertable
only in a database where the extension is installed (migration 0002).

A server where the extension is available but not preloaded is the trap this module
exists for: there `CREATE EXTENSION timescaledb`, and in a database that has the
extension any DDL, ends the connection with a fatal error. Whether the library is
preloaded is read from `pg_settings`: `timescaledb.disable_load` is defined only by the
loaded library, and any role may read it (`shared_preload_libraries` itself is hidden
from roles that are not superusers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from storage.errors import EngineError

Mode = Literal["auto", "on", "off"]
Engine = Literal["timescaledb", "postgresql"]

PRELOAD = "shared_preload_libraries = 'timescaledb'"

#: stop: the package is installed on the server, the library not loaded (issue 16, item 6)
NOT_PRELOADED = (f"TimescaleDB is installed on the PostgreSQL server but not preloaded: set {PRELOAD} "
                 "in postgresql.conf and restart PostgreSQL, or set TRYGG_TIMESCALEDB=off to use plain "
                 "PostgreSQL partitions")
IN_USE_NOT_PRELOADED = (f"this database uses TimescaleDB but the PostgreSQL server does not preload it: "
                        f"set {PRELOAD} in postgresql.conf and restart PostgreSQL")
MISSING = ("TRYGG_TIMESCALEDB=on but the PostgreSQL server has no timescaledb extension: install "
           "TimescaleDB for this server, or set TRYGG_TIMESCALEDB=auto")
ON_BUT_PLAIN = ("TRYGG_TIMESCALEDB=on but this database was created with plain PostgreSQL partitions, "
                "which cannot become hypertables in place: set TRYGG_TIMESCALEDB=auto")
OFF_BUT_IN_USE = ("TRYGG_TIMESCALEDB=off but this database already uses TimescaleDB (trygg.events is a "
                  "hypertable): set TRYGG_TIMESCALEDB=auto")
#: warnings: the extension is there, Trygg does not use it
OFF_WARNING = (f"TimescaleDB is available on the PostgreSQL server but TRYGG_TIMESCALEDB=off: plain "
               f"PostgreSQL partitions (to use it: {PRELOAD} and TRYGG_TIMESCALEDB=auto on a new database)")
PLAIN_WARNING = ("TimescaleDB is available on the PostgreSQL server but this database was created with "
                 "plain PostgreSQL partitions; Trygg keeps them (docs/storage.md \"TimescaleDB\")")

_STATE = """
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
       EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load'),
       (SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'trygg' AND c.relname = 'events')
"""


@dataclass(frozen=True)
class ServerState:
    """What the engine decision reads; every part readable by any role."""

    available: bool  # the server has the extension's files (pg_available_extensions)
    installed: bool  # this database has the extension (pg_extension)
    preloaded: bool  # the server loaded the library at start (shared_preload_libraries)
    events: Engine | None  # how trygg.events was created; None: not yet (a new database)


@dataclass(frozen=True)
class Decision:
    engine: Engine
    create_extension: bool  # `CREATE EXTENSION timescaledb` before the migrations
    warning: str | None  # one line for the operator, logged once per start


def server_state(conn: psycopg.Connection[Any]) -> ServerState:
    row = conn.execute(_STATE).fetchone()
    assert row is not None
    available, installed, preloaded, relkind = row
    events: Engine | None = None if relkind is None else "postgresql" if relkind == "p" else "timescaledb"
    return ServerState(bool(available), bool(installed), bool(preloaded), events)


def decide(mode: Mode, state: ServerState) -> Decision:
    """The engine for this database, or EngineError with one line saying what to set.

    auto: TimescaleDB when available and preloaded; available but not preloaded stops
    (an operator who installed the package wants it, and falling back would fix the
    database on plain partitions for good). off: plain partitions, a warning when the
    extension is available. on: TimescaleDB or stop. What a database already is wins
    over the setting, which cannot convert it either way.
    """
    if state.installed and not state.preloaded:
        raise EngineError(IN_USE_NOT_PRELOADED)  # every DDL there ends the connection
    if state.events == "timescaledb":
        if mode == "off":
            raise EngineError(OFF_BUT_IN_USE)
        return Decision("timescaledb", create_extension=False, warning=None)
    if state.events == "postgresql":
        if mode == "on":
            raise EngineError(ON_BUT_PLAIN)
        warning = (OFF_WARNING if mode == "off" else PLAIN_WARNING) if state.available else None
        return Decision("postgresql", create_extension=False, warning=warning)
    if mode == "off":
        return Decision("postgresql", create_extension=False, warning=OFF_WARNING if state.available else None)
    if state.available and not state.preloaded:
        raise EngineError(NOT_PRELOADED)
    if state.available:
        return Decision("timescaledb", create_extension=not state.installed, warning=None)
    if mode == "on":
        raise EngineError(MISSING)
    return Decision("postgresql", create_extension=False, warning=None)


def _in_catalog(conn: psycopg.Connection[Any], catalog: str, columns: tuple[str, str], qualified: str) -> bool:
    """Whether TimescaleDB's catalog table `catalog` has a row naming `qualified`
    ("schema.name") in its (schema, name) `columns`; False without the extension."""
    schema, _, name = qualified.rpartition(".")
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"_timescaledb_catalog.{catalog}",)).fetchone()
    if not row or not row[0]:
        return False
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} = %s AND {} = %s)").format(
        sql.Identifier("_timescaledb_catalog", catalog), sql.Identifier(columns[0]), sql.Identifier(columns[1]))
    row = conn.execute(query, (schema or "public", name)).fetchone()
    return bool(row and row[0])


def is_hypertable(conn: psycopg.Connection[Any], table: str) -> bool:
    """Whether `table` ("schema.name") is a TimescaleDB hypertable; False without the extension."""
    return _in_catalog(conn, "hypertable", ("schema_name", "table_name"), table)


def is_continuous_aggregate(conn: psycopg.Connection[Any], view: str) -> bool:
    """Whether `view` ("schema.name") is a continuous aggregate; False without the extension."""
    return _in_catalog(conn, "continuous_agg", ("user_view_schema", "user_view_name"), view)


def continuous_aggregate_watermark(conn: psycopg.Connection[Any], view: str) -> datetime | None:
    """Up to when `view` ("schema.name") is materialised (every bucket before it has been
    refreshed, by anyone: a refresh policy too); None when nothing is yet."""
    schema, _, name = view.rpartition(".")
    row = conn.execute(
        "SELECT nullif(greatest(w, '1970-01-01'), '1970-01-01')"  # (the lowest time: nothing materialised)
        " FROM (SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(a.mat_hypertable_id))"
        " FROM _timescaledb_catalog.continuous_agg a WHERE a.user_view_schema = %s AND a.user_view_name = %s) m(w)",
        (schema or "public", name)).fetchone()
    found: datetime | None = row[0] if row else None
    return found


def may_refresh(conn: psycopg.Connection[Any], view: str) -> bool:
    """Whether the current role may refresh `view` (TimescaleDB wants its owner)."""
    row = conn.execute("SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass(%s)",
                       (view,)).fetchone()
    return bool(row and row[0])


def drop_old_chunks(conn: psycopg.Connection[Any], table: str, older_than: datetime) -> list[str]:
    """Drop the chunks of hypertable or continuous aggregate `table` whose whole range
    lies before `older_than` (a chunk goes when its upper bound is <= it: the retention
    rule of docs/storage.md); returns their names ("_timescaledb_internal._hyper_1_2_chunk").
    Runs in the caller's transaction."""
    rows = conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s)", (table, older_than)).fetchall()
    return [str(r[0]) for r in rows]


def refresh_continuous_aggregate(conn: psycopg.Connection[Any], view: str, start: datetime, end: datetime) -> None:
    """Materialise `view` for [start, end) (whole buckets inside it): the buckets whose
    raw rows changed since the last refresh are recomputed, so a wide window is cheap.
    TimescaleDB refuses this inside a transaction block: `conn` must be in autocommit.

    `start` must not be earlier than the raw table's retention cutoff (the `older_than`
    its chunks are dropped with): dropping raw chunks marks their range as changed, and a
    refresh reaching into it recomputes those buckets from rows that are gone, emptying
    them (tests/test_timescale.py shows both)."""
    if not conn.autocommit:
        raise ValueError("refresh_continuous_aggregate needs a connection in autocommit")
    conn.execute("CALL refresh_continuous_aggregate(%s::regclass, %s, %s)", (view, start, end))
