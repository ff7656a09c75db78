"""A resident's recent alerts, for the relatives' alert history (docs/api.md).

Only what a relative may read is selected: kind, state and times. Devices, events,
positions, staff names and notes stay in trygg.alerts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


async def recent_alerts(conn: psycopg.AsyncConnection[Any], resident_id: str, since: datetime,
                        limit: int) -> list[dict[str, Any]]:
    """Alerts opened or closed since `since`, and any still unresolved, newest first:
    `alert_id`, `kind`, `state`, `opened_at`, `closed_at`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT alert_id, kind, state, opened_at, closed_at FROM trygg.alerts"
            " WHERE resident_id = %(rid)s"
            " AND (opened_at >= %(since)s OR closed_at >= %(since)s OR state IN ('open', 'acknowledged'))"
            " ORDER BY opened_at DESC, alert_id LIMIT %(limit)s",
            {"rid": resident_id, "since": since, "limit": limit},
        )
        return list(await cur.fetchall())


__all__ = ["recent_alerts"]
