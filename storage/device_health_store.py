"""Device health for the care pages (docs/devices.md): which devices are offline, never
heard from, or low on battery, decided the way the rules decide `device_offline` and
`battery_low` (processors/rules_devices.py), from what storage keeps of each device:
`trygg.device_status` (last status, when last heard, latest battery report).

One SQL expression, `HEALTH`, decides a device's health; the resident card
(storage/residents_store.py `resident_card`) and the devices that need a visit
(`devices_needing_visit`) both use it, with the thresholds of trygg/contract.py:

- ``never_heard``: no message from the device since it was registered (no status row);
- ``offline``: nothing heard for `MISSED_HEARTBEATS` × `heartbeat_s`, or an ``offline``
  status (MQTT Last Will) with nothing heard after it, standing for the offline debounce
  (setting TRYGG_OFFLINE_DEBOUNCE_S), as the rules wait before they raise an alert;
- ``low_battery``: the latest battery report is below `BATTERY_LOW_BELOW` percent;
- ``ok``: none of these.

The caller decides who may see which teams (dashboard/authz.py) and writes the audit row.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import dict_row

from trygg.contract import ALARM_CRITICAL_KINDS, BATTERY_LOW_BELOW, MISSED_HEARTBEATS

Health = Literal["ok", "offline", "low_battery", "never_heard"]

#: The health of device `d` (trygg.devices) with status row `s` (trygg.device_status,
#: LEFT JOINed on the device id); parameters of `HealthRules.params`.
HEALTH: Final = """CASE
    WHEN s.device_id IS NULL THEN 'never_heard'
    WHEN s.last_seen <= %(now)s - make_interval(secs => d.heartbeat_s * %(missed)s)
      OR (s.online IS FALSE AND s.status_at >= s.last_seen AND s.status_at <= %(now)s - %(debounce)s)
      THEN 'offline'
    WHEN s.battery_pct < %(battery_low)s THEN 'low_battery'
    ELSE 'ok'
END"""

#: What needs a visit first: an alarm-critical device offline, another device offline,
#: a device never heard, a low battery; then devices in order. Within each: silent the
#: longest first, the emptiest battery first, then by resident.
_RANK: Final = """CASE health
    WHEN 'offline' THEN CASE WHEN kind = ANY(%(critical)s) THEN 0 ELSE 1 END
    WHEN 'never_heard' THEN 2
    WHEN 'low_battery' THEN 3
    ELSE 4
END"""

#: The columns of one device's health (`d` device, `s` its status row).
DEVICE_COLUMNS: Final = f"""d.id, d.kind, s.last_seen, s.battery_pct, s.battery_at, {HEALTH} AS health"""


@dataclass(frozen=True, slots=True)
class HealthRules:
    """When health is decided (`now`) and how long an `offline` status must stand."""

    now: datetime
    offline_debounce: timedelta

    def params(self) -> dict[str, Any]:
        return {"now": self.now, "debounce": self.offline_debounce, "missed": MISSED_HEARTBEATS,
                "battery_low": BATTERY_LOW_BELOW, "critical": sorted(ALARM_CRITICAL_KINDS)}


def online(health: str) -> bool | None:
    """Whether a device is reachable as far as Trygg knows; None when never heard."""
    return None if health == "never_heard" else health != "offline"


_NEEDING_VISIT = f"""
SELECT * FROM (
    SELECT {DEVICE_COLUMNS}, r.id AS resident_id, r.name AS resident_name, r.timezone,
           t.id AS team_id, t.name AS team_name
    FROM trygg.residents r
    JOIN trygg.teams t ON t.id = r.team_id
    JOIN trygg.devices d ON d.resident_id = r.id
    LEFT JOIN trygg.device_status s ON s.device_id = d.id
    WHERE %(all_teams)s OR r.team_id = ANY(%(teams)s)
) h
WHERE %(every_device)s OR health <> 'ok'
ORDER BY {_RANK}, CASE WHEN health = 'offline' THEN last_seen END,
         CASE WHEN health = 'low_battery' THEN battery_pct END, resident_name, resident_id, id
LIMIT %(limit)s
"""


async def devices_needing_visit(conn: psycopg.AsyncConnection[Any], teams: Collection[str] | None,
                                rules: HealthRules, *, every_device: bool, limit: int
                                ) -> tuple[list[dict[str, Any]], bool]:
    """Devices of `teams` (None: every team) that need a visit — all of them with
    `every_device` — what needs a visit first first, at most `limit`; True if more were
    left out. Each row: the device's columns (`DEVICE_COLUMNS`), its resident (id, name,
    time zone) and team (id, name)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_NEEDING_VISIT, {**rules.params(), "all_teams": teams is None,
                                           "teams": sorted(teams or ()), "every_device": every_device,
                                           "limit": limit + 1})
        rows = list(await cur.fetchall())
    return rows[:limit], len(rows) > limit


__all__ = ["DEVICE_COLUMNS", "HEALTH", "Health", "HealthRules", "devices_needing_visit", "online"]
