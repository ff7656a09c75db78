"""Reading residents for the dashboard: registry rows, timelines, last contact, position.

All functions take an open async connection; the caller decides who may see what
(dashboard/authz.py) and writes the audit row (dashboard/audit.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import dict_row

from storage.device_health_store import DEVICE_COLUMNS, HealthRules

#: How far back the newest position of a resident is looked for.
LOCATION_WINDOW = timedelta(days=7)
#: How far back the newest event is looked for when working out the last contact.
CONTACT_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class ResidentRow:
    """What authorization and privacy rules need to know about one resident."""

    id: str
    team_id: str
    timezone: str
    consents: dict[str, Any]
    location_basis: dict[str, Any] | None
    name: str = ""

    def consent(self, name: str) -> bool:
        return self.consents.get(name) is True

    def local_date(self, now: datetime) -> date:
        try:
            return now.astimezone(ZoneInfo(self.timezone)).date()
        except (ZoneInfoNotFoundError, ValueError):
            return now.date()

    def location_basis_valid(self, now: datetime) -> bool:
        """A `consent` or `vedtak` basis whose `valid_until` (if any) is not past
        (docs/contract.md#7-privacy-and-lawful-care)."""
        basis = self.location_basis
        if not basis or basis.get("kind") not in ("consent", "vedtak"):
            return False
        until = basis.get("valid_until")
        if until is None:
            return True
        try:
            return self.local_date(now) <= date.fromisoformat(str(until))
        except ValueError:
            return False


async def get_resident(conn: psycopg.AsyncConnection[Any], resident_id: str) -> ResidentRow | None:
    cur = await conn.execute(
        "SELECT id, team_id, timezone, consents, location_basis, name FROM trygg.residents WHERE id = %s",
        (resident_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return ResidentRow(row[0], row[1], row[2], row[3] or {}, row[4], row[5])


_LIST = """
SELECT r.id, r.name, r.team_id AS team, r.timezone,
       json_build_object('start', to_char(r.night_start, 'HH24:MI'),
                         'end', to_char(r.night_end, 'HH24:MI')) AS night,
       r.settings, r.safe_zones, r.consents, r.location_basis,
       coalesce((SELECT json_agg(json_build_object('id', d.id, 'kind', d.kind,
                                                   'heartbeat_s', d.heartbeat_s) ORDER BY d.id)
                 FROM trygg.devices d WHERE d.resident_id = r.id), '[]'::json) AS devices
FROM trygg.residents r
WHERE (%(all)s OR r.team_id = ANY(%(teams)s))
ORDER BY r.id
LIMIT %(limit)s OFFSET %(offset)s
"""


async def list_residents(conn: psycopg.AsyncConnection[Any], teams: Collection[str] | None,
                         limit: int, offset: int) -> list[dict[str, Any]]:
    """Residents as in the registry document; `teams` None = every team."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"all": teams is None, "teams": sorted(teams or ()),
                                  "limit": limit, "offset": offset})
        return list(await cur.fetchall())


_CARD = """
SELECT r.id, r.name, r.timezone, r.card, t.id AS team_id, t.name AS team_name
FROM trygg.residents r JOIN trygg.teams t ON t.id = r.team_id
WHERE r.id = %(resident)s
"""

_CARD_DEVICES = f"""
SELECT {DEVICE_COLUMNS}
FROM trygg.devices d LEFT JOIN trygg.device_status s ON s.device_id = d.id
WHERE d.resident_id = %(resident)s
ORDER BY d.id
"""


async def resident_card(conn: psycopg.AsyncConnection[Any], resident_id: str, rules: HealthRules
                        ) -> dict[str, Any] | None:
    """The resident card (docs/contract.md#the-resident-card): id, name, timezone,
    `card` (address, access and contacts as the registry document gave them), team_id,
    team_name and `devices`, each with its health (storage/device_health_store.py).
    None if there is no such resident."""
    params = {**rules.params(), "resident": resident_id}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CARD, params)
        card = await cur.fetchone()
        if card is None:
            return None
        await cur.execute(_CARD_DEVICES, params)
        card["devices"] = list(await cur.fetchall())
    return card


def timeline_query(with_locations: bool) -> bytes:
    """`resident_events`' query; parameters: resident, since, until, limit."""
    return (
        "SELECT device_id, event_id, type, ts, received_at, data FROM trygg.events"
        " WHERE resident_id = %s AND ts >= %s AND ts < %s AND type <> 'heartbeat'"
        + ("" if with_locations else " AND type <> 'location'")
        + " ORDER BY ts, seq LIMIT %s"
    ).encode()


async def resident_events(conn: psycopg.AsyncConnection[Any], resident_id: str, since: datetime,
                          until: datetime, *, with_locations: bool, limit: int
                          ) -> tuple[list[dict[str, Any]], bool]:
    """Events in [since, until) in time order, at most `limit`; True if more were left out.
    Heartbeats are not events rows (docs/storage.md "Heartbeats"; rows stored before
    migration 0011 are left out too), so a timeline holds what happened, not every minute
    a device was heard. Read from the (resident_id, ts) index
    in ts order; the sort by (ts, seq) is incremental and stops at `limit`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(timeline_query(with_locations), (resident_id, since, until, limit + 1))
        rows = list(await cur.fetchall())
    return rows[:limit], len(rows) > limit


#: `last_contact`'s query; parameters: resident, resident, since
LAST_CONTACT = (
    "SELECT greatest("
    " (SELECT max(s.last_seen) FROM trygg.device_status s"
    "  JOIN trygg.devices d ON d.id = s.device_id WHERE d.resident_id = %s),"
    " (SELECT received_at FROM trygg.events WHERE resident_id = %s AND ts >= %s"
    "  ORDER BY ts DESC LIMIT 1))"
)


async def last_contact(conn: psycopg.AsyncConnection[Any], resident_id: str, now: datetime) -> datetime | None:
    """When anything was last heard from one of the resident's devices: their
    `device_status.last_seen` (every message, heartbeats included), or the newest stored
    event of the resident (a device that has since gone to someone else). Both from
    indexes: the newest event is the first row of a backward scan of (resident_id, ts)."""
    cur = await conn.execute(LAST_CONTACT, (resident_id, resident_id, now - CONTACT_WINDOW))
    row = await cur.fetchone()
    return row[0] if row else None


async def last_location(conn: psycopg.AsyncConnection[Any], resident_id: str, now: datetime
                        ) -> dict[str, Any] | None:
    """The newest stored position of the last week: lat, lon, accuracy_m, ts."""
    cur = await conn.execute(
        "SELECT data, ts FROM trygg.events WHERE resident_id = %s AND type = 'location'"
        " AND ts >= %s ORDER BY ts DESC LIMIT 1",
        (resident_id, now - LOCATION_WINDOW),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    data = row[0] or {}
    return {"lat": data.get("lat"), "lon": data.get("lon"), "accuracy_m": data.get("accuracy_m"),
            "ts": row[1]}


async def stored_open_alerts(conn: psycopg.AsyncConnection[Any], resident_id: str) -> list[dict[str, Any]]:
    """Unresolved alerts of a resident as the alerts stage last stored them (§3 wire form).

    Used when the alert stage does not run in this process.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT alert_id, resident_id, team_id, kind, priority, state, opened_at, updated_at,"
            " event_count, trigger, last_event, location, escalation_level, acknowledged_by,"
            " resolved_by, note, teams FROM trygg.alerts"
            " WHERE resident_id = %s AND state IN ('open', 'acknowledged') ORDER BY opened_at",
            (resident_id,),
        )
        return list(await cur.fetchall())


__all__ = [
    "ResidentRow",
    "get_resident",
    "last_contact",
    "last_location",
    "list_residents",
    "resident_card",
    "resident_events",
    "stored_open_alerts",
]
