"""Numbered SQL migrations (`migrations/NNNN_name.sql`), applied in order under an
advisory lock so that two processes starting together do not race."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from storage.errors import MigrationError

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


def migrate(conninfo: str) -> list[str]:
    """Apply every migration not yet applied; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
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
