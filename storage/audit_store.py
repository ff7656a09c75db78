"""trygg.audit_log, the who-accessed-what log (docs/contract.md#6b-storage-contract, #7-privacy-and-lawful-care): rows
in, rows out.

Rows arrive from the dashboard's audit journal (dashboard/audit_journal.py), each with
the id it got when it was journaled; `insert_rows` stores a row once however often the
journal is replayed (migration 0008). The table is append-only: nothing here updates or
deletes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

_INSERT = """
INSERT INTO trygg.audit_log (row_id, at, actor, role, resident_id, action)
SELECT r.row_id, r.at, r.actor, r.role, r.resident_id, r.action
FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])
     WITH ORDINALITY AS r(row_id, at, actor, role, resident_id, action, n)
ORDER BY r.n
ON CONFLICT (row_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One access: who (`actor`, `role`), whose data (`resident_id`, None when no single
    resident), what (`action`), when (`at`)."""

    row_id: UUID
    at: datetime
    actor: str
    role: str
    resident_id: str | None
    action: str

    def to_json(self) -> bytes:
        """One journal line, without the newline."""
        return json.dumps({"id": str(self.row_id), "at": self.at.isoformat(), "actor": self.actor,
                           "role": self.role, "resident_id": self.resident_id, "action": self.action},
                          separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, line: bytes) -> AuditRow:
        """The row of one journal line; ValueError (or KeyError, TypeError) when it is not one."""
        doc = json.loads(line)
        at = datetime.fromisoformat(doc["at"])
        if at.tzinfo is None:
            raise ValueError("audit time without an offset")
        resident_id = doc["resident_id"]
        return cls(UUID(doc["id"]), at, str(doc["actor"]), str(doc["role"]),
                   None if resident_id is None else str(resident_id), str(doc["action"]))


async def insert_rows(conn: psycopg.AsyncConnection[Any], rows: Sequence[AuditRow]) -> int:
    """Insert in the given order, skipping rows already stored; returns how many were new."""
    if not rows:
        return 0
    cur = await conn.execute(_INSERT, (
        [r.row_id for r in rows], [r.at for r in rows], [r.actor for r in rows], [r.role for r in rows],
        [r.resident_id for r in rows], [r.action for r in rows]))
    return max(cur.rowcount, 0)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which rows to read: each field None for any. `action` matches part of the action
    text (`/card`, `POST`); `before` is a row id, for paging back."""

    resident_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    before: int | None = None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def entries(conn: psycopg.AsyncConnection[Any], where: AuditFilter, limit: int) -> list[dict[str, Any]]:
    """Audit rows (`id`, `at`, `actor`, `role`, `resident_id`, `action`), newest first
    (by id: the order they were stored in)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, actor, role, resident_id, action FROM trygg.audit_log"
            " WHERE (%(rid)s::text IS NULL OR resident_id = %(rid)s::text)"
            " AND (%(actor)s::text IS NULL OR actor = %(actor)s::text)"
            " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
            " AND (%(until)s::timestamptz IS NULL OR at < %(until)s::timestamptz)"
            " AND (%(action)s::text IS NULL OR action ILIKE %(action)s::text)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"rid": where.resident_id, "actor": where.actor, "since": where.since, "until": where.until,
             "action": None if where.action is None else _like(where.action), "before": where.before,
             "limit": limit},
        )
        return list(await cur.fetchall())


__all__ = ["AuditFilter", "AuditRow", "entries", "insert_rows"]
