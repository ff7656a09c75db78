"""Numbered SQL migrations (`migrations/NNNN_name.sql`), applied in order under an
advisory lock so that two processes starting together do not race.

Before any of them, the engine decision (storage/timescale.py): TimescaleDB or plain
PostgreSQL partitions, per `TRYGG_TIMESCALEDB` and what the server says. When it says
TimescaleDB for a new database, the extension is created here, before migration 0002,
which makes `trygg.events` a hypertable exactly when the extension is installed; no
migration creates it (one that did would end the connection on a server that has the
package but does not preload it)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from storage import timescale
from storage.errors import EngineError, MigrationError
from storage.pool import Pool
from trygg.logging import get_logger

log = get_logger(__name__)

#: pg_advisory_lock key: "trygg" in ASCII.
_LOCK_KEY = 0x7472796767
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def _pending(conn: psycopg.Connection[tuple[object, ...]]) -> list[Migration] | None:
    """The migrations not yet applied; None when the database has none at all yet."""
    row = conn.execute("SELECT to_regclass('trygg.schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return None
    done = {r[0] for r in conn.execute("SELECT version FROM trygg.schema_migrations")}
    return [m for m in available() if m.version not in done]


def migrate(pool: Pool, timescaledb: timescale.Mode = "auto") -> list[str]:
    """Apply every migration not yet applied; returns the names applied now.

    `timescaledb` is `TRYGG_TIMESCALEDB`: the engine decision is taken at every call,
    also when nothing is pending, so a server that cannot serve the database as asked
    stops the start with one line (EngineError), and its warning is logged once.

    A database that is up to date is only read, so the application's least-privileged
    role (`trygg_app`, docs/privacy.md) can start without rights to create anything.
    The pool's connection is used in autocommit (each migration is a transaction of its
    own, the advisory lock a session's) and handed back as it was lent.
    """
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            return _apply(conn, timescaledb)
        finally:
            with contextlib.suppress(psycopg.Error):  # a broken connection is dropped by the pool
                conn.autocommit = False


def _apply(conn: psycopg.Connection[tuple[object, ...]], mode: timescale.Mode) -> list[str]:
    applied_now: list[str] = []
    decision = timescale.decide(mode, timescale.server_state(conn))
    if decision.warning:
        log.warning("timescaledb_not_used", detail=decision.warning)
    if _pending(conn) == []:
        return applied_now
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        # again under the lock: another process may have created the schema meanwhile
        if timescale.decide(mode, timescale.server_state(conn)).create_extension:
            _create_extension(conn)
        conn.execute("CREATE SCHEMA IF NOT EXISTS trygg")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS trygg.schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM trygg.schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            try:
                with conn.transaction():
                    conn.execute(mig.sql.encode())
                    conn.execute(
                        "INSERT INTO trygg.schema_migrations (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
            except psycopg.Error as exc:
                raise MigrationError(mig.version, str(exc).strip()) from exc
            applied_now.append(f"{mig.version:04d}_{mig.name}")
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _create_extension(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        raise EngineError(f"cannot create the timescaledb extension ({str(exc).strip().splitlines()[0]}): "
                          "create it as a superuser (CREATE EXTENSION timescaledb), or set "
                          "TRYGG_TIMESCALEDB=off") from exc
    log.info("timescaledb_extension_created")
