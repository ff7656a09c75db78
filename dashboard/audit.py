"""The who-accessed-what log (DESIGN.md §7): one row in trygg.audit_log per resident per
read, written and committed before the response leaves.

Routes call `record` with the connection they read with, inside its transaction, and
return only after the pool committed it: if the audit row cannot be written, the caller
gets an error instead of the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import psycopg
from prometheus_client import Counter
from psycopg.rows import dict_row
from starlette.requests import Request

from dashboard.authz import Principal

MAX_ACTION: Final = 500

AUDIT_ROWS = Counter("trygg_audit_rows", "Rows written to trygg.audit_log", ["method"])


def action_of(request: Request) -> str:
    """`GET /api/residents/r-17/events?since=…`, cut to 500 characters."""
    text = f"{request.method} {request.url.path}"
    if request.url.query:
        text += f"?{request.url.query}"
    return text[:MAX_ACTION]


async def record(conn: psycopg.AsyncConnection[Any], who: Principal, resident_ids: Iterable[str | None],
                 action: str) -> int:
    """One row per resident (None: an access that concerns no single resident)."""
    rows = [(who.username, who.role.value, rid, action[:MAX_ACTION]) for rid in resident_ids]
    if not rows:
        return 0
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO trygg.audit_log (actor, role, resident_id, action) VALUES (%s, %s, %s, %s)",
            rows,
        )
    method = action.split(" ", 1)[0]
    AUDIT_ROWS.labels(method if method in ("GET", "POST", "PUT") else "other").inc(len(rows))
    return len(rows)


async def entries(conn: psycopg.AsyncConnection[Any], resident_id: str | None, actor: str | None,
                  since: datetime | None, until: datetime | None, limit: int) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT at, actor, role, resident_id, action FROM trygg.audit_log"
            " WHERE (%(rid)s::text IS NULL OR resident_id = %(rid)s::text)"
            " AND (%(actor)s::text IS NULL OR actor = %(actor)s::text)"
            " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
            " AND (%(until)s::timestamptz IS NULL OR at < %(until)s::timestamptz)"
            " ORDER BY at DESC, id DESC LIMIT %(limit)s",
            {"rid": resident_id, "actor": actor, "since": since, "until": until, "limit": limit},
        )
        return list(await cur.fetchall())


__all__ = ["AUDIT_ROWS", "action_of", "entries", "record"]
