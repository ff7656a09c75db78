"""Saving and loading the registry (docs/contract.md#3-registry-file): replaced as a whole, in one transaction."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from trygg.registry import Registry, dump_registry, validate_registry_json

#: The resident's fields stored in `trygg.residents.card` (migration 0015).
CARD_FIELDS: set[str] = {"address", "access", "contacts"}


def save_registry(conn: psycopg.Connection[Any], reg: Registry, actor: str) -> None:
    """Replace teams, residents and devices; upsert the users the document names.

    Users not named in the document are kept: they may have been created with
    `trygg users add` (docs/contract.md#3-registry-file). Runs in one transaction.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("LOCK TABLE trygg.registry IN EXCLUSIVE MODE")
        cur.execute("DELETE FROM trygg.devices")
        cur.execute("DELETE FROM trygg.residents")
        cur.execute("DELETE FROM trygg.teams")
        cur.executemany(
            "INSERT INTO trygg.teams (id, name, escalate_to, webhook_url) VALUES (%s, %s, %s, %s)",
            [(t.id, t.name, t.escalate_to, t.webhook_url) for t in reg.teams],
        )
        cur.executemany(
            "INSERT INTO trygg.residents (id, name, team_id, timezone, night_start, night_end,"
            " settings, safe_zones, consents, location_basis, card)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    r.id, r.name, r.team, r.timezone, r.night.start, r.night.end,
                    Jsonb(r.settings.model_dump()),
                    Jsonb([z.model_dump(exclude_none=True) for z in r.safe_zones]),
                    Jsonb(r.consents.model_dump()),
                    Jsonb(r.location_basis.model_dump(mode="json")) if r.location_basis else None,
                    Jsonb(r.model_dump(mode="json", include=CARD_FIELDS, exclude_none=True)),
                )
                for r in reg.residents
            ],
        )
        cur.executemany(
            "INSERT INTO trygg.devices (id, resident_id, kind, heartbeat_s) VALUES (%s, %s, %s, %s)",
            [(d.id, r.id, d.kind, d.heartbeat_s) for r in reg.residents for d in r.devices],
        )
        cur.executemany(
            "INSERT INTO trygg.users (username, role, teams, residents) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (username) DO UPDATE SET role = excluded.role, teams = excluded.teams,"
            " residents = excluded.residents, updated_at = now()",
            [(u.username, u.role, u.teams, u.residents) for u in reg.users],
        )
        cur.execute(
            "INSERT INTO trygg.registry (id, document, loaded_at, loaded_by)"
            " VALUES (1, %s, now(), %s)"
            " ON CONFLICT (id) DO UPDATE SET document = excluded.document,"
            " loaded_at = excluded.loaded_at, loaded_by = excluded.loaded_by",
            (Jsonb(dump_registry(reg)), actor),
        )


def load_registry_text(conn: psycopg.Connection[Any]) -> str | None:
    """The registry document last saved, as JSON text (None when none was loaded).

    Text, not parsed: a large registry is validated straight from it
    (`validate_registry_json`) and kept as it is in the local copy."""
    row = conn.execute("SELECT document::text FROM trygg.registry WHERE id = 1").fetchone()
    return None if row is None else str(row[0])


def load_registry(conn: psycopg.Connection[Any]) -> Registry:
    """The registry last saved, or an empty one."""
    text = load_registry_text(conn)
    return Registry() if text is None else validate_registry_json(text)
