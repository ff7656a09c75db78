"""Teams for the care pages: their names (the console shows "Hjemmetjenesten Øst", not
`east`), and each team's devices that need a visit (docs/devices.md).

A device's health is decided in storage (storage/device_health_store.py, with the rules'
thresholds from trygg/contract.py); here it is put in words, Norwegian and English, for
the devices page and for the resident card (dashboard/routes_residents.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from dashboard import audit
from dashboard.authz import Action, require, team_scope
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Now, Pool, State
from dashboard.errors import responses
from storage.device_health_store import Health, HealthRules, devices_needing_visit, online
from trygg.contract import DeviceKind

router = APIRouter(prefix="/api", tags=["teams"])

#: Device kinds in words: [Norwegian, English].
DEVICE_KIND_WORDS: Final[dict[str, tuple[str, str]]] = {
    DeviceKind.ALARM_UNIT: ("Trygghetsalarm", "Safety alarm"),
    DeviceKind.AUTO_ALARM: ("Selvutløsende alarm", "Automatic alarm"),
    DeviceKind.FALL_SENSOR: ("Fallsensor", "Fall sensor"),
    DeviceKind.SMOKE_DETECTOR: ("Røykvarsler", "Smoke detector"),
    DeviceKind.DOOR_SENSOR: ("Dørsensor", "Door sensor"),
    DeviceKind.DOOR_LOCK: ("Elektronisk dørlås", "Electronic door lock"),
    DeviceKind.MOTION_SENSOR: ("Bevegelsessensor", "Motion sensor"),
    DeviceKind.GPS_TRACKER: ("GPS-sporer", "GPS tracker"),
    DeviceKind.PHONE: ("Mobiltelefon", "Mobile phone"),
}

_MONTHS_EN: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class TeamOut(BaseModel):
    id: str
    name: str
    escalate_to: str | None = None


class TeamRef(BaseModel):
    id: str
    name: str


class ResidentRef(BaseModel):
    id: str
    name: str


class DeviceHealthOut(BaseModel):
    """One device and its health, in words too (`kind_words`, `health_words`: [nb, en])."""

    id: str
    kind: str
    kind_words: list[str]
    last_seen: datetime | None
    online: bool | None  # None: never heard from
    battery_pct: int | None
    battery_at: datetime | None
    health: Health
    health_words: list[str]


class DeviceNeedOut(DeviceHealthOut):
    resident: ResidentRef
    team: TeamRef


class DeviceHealthListOut(BaseModel):
    devices: list[DeviceNeedOut]
    truncated: bool  # more devices matched than `limit`


def health_rules(state: State, now: datetime) -> HealthRules:
    """Health as the rules decide it: the same offline debounce as the processors."""
    return HealthRules(now, timedelta(seconds=state.settings.offline_debounce_s))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Europe/Oslo")


def clock_words(at: datetime, timezone: str, now: datetime) -> tuple[str, str]:
    """"14:02" today (the resident's time zone), "3.12. kl. 14:02" / "3 Dec 14:02" this
    year, with the year before that."""
    tz = _zone(timezone)
    local, today = at.astimezone(tz), now.astimezone(tz).date()
    hhmm = local.strftime("%H:%M")
    if local.date() == today:
        return hhmm, hhmm
    year = "" if local.year == today.year else f"{local.year}"
    month = _MONTHS_EN[local.month - 1]
    return (f"{local.day}.{local.month}.{year} kl. {hhmm}",
            f"{local.day} {month}{' ' + year if year else ''} {hhmm}")


def health_words(health: str, last_seen: datetime | None, battery_pct: int | None, timezone: str,
                 now: datetime) -> list[str]:
    """What a device's health means, in plain words: [nb, en]."""
    if health == "offline":
        if last_seen is None:
            return ["Svarer ikke", "Offline"]
        nb, en = clock_words(last_seen, timezone, now)
        return [f"Svarer ikke siden {nb}", f"Offline since {en}"]
    if health == "never_heard":
        return ["Aldri hørt fra", "Never heard from"]
    if health == "low_battery":
        return [f"Lavt batteri ({battery_pct} %)", f"Low battery ({battery_pct} %)"]
    return ["I orden", "OK"]


def device_health(row: dict[str, Any], timezone: str, now: datetime) -> DeviceHealthOut:
    """A device row of storage/device_health_store.py (`DEVICE_COLUMNS`) as the API shows it."""
    kind = str(row["kind"])
    return DeviceHealthOut(
        id=row["id"], kind=kind, kind_words=list(DEVICE_KIND_WORDS.get(kind, (kind, kind))),
        last_seen=row["last_seen"], online=online(row["health"]), battery_pct=row["battery_pct"],
        battery_at=row["battery_at"], health=row["health"],
        health_words=health_words(row["health"], row["last_seen"], row["battery_pct"], timezone, now))


@router.get("/teams", response_model=list[TeamOut], responses=responses(401, 403),
            summary="The caller's teams (operator and admin: all), with their names")
async def teams(who: CurrentUser, pool: Pool) -> list[TeamOut]:
    require(who, Action.TEAMS_LIST)
    scope = team_scope(who)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, name, escalate_to FROM trygg.teams WHERE %(all)s OR id = ANY(%(teams)s) ORDER BY name, id",
            {"all": scope is None, "teams": sorted(scope or ())})
        rows = await cur.fetchall()
    return [TeamOut(id=r[0], name=r[1], escalate_to=r[2]) for r in rows]


@router.get("/devices/health", response_model=DeviceHealthListOut, responses=responses(401, 403),
            summary="Devices that need a visit (offline, never heard, low battery), what needs one first first")
async def devices_health(
    request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, state: State, now: Now,
    team: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this team")] = None,
    every: Annotated[bool, Query(alias="all", description="every device, also those in order")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DeviceHealthListOut:
    require(who, Action.DEVICE_HEALTH)
    scope = team_scope(who, team)
    rows: list[dict[str, Any]] = []
    truncated = False
    if scope is None or scope:
        async with pool.connection() as conn:
            rows, truncated = await devices_needing_visit(conn, scope, health_rules(state, now),
                                                          every_device=every, limit=limit)
    await audit_log.record(who, list(dict.fromkeys(r["resident_id"] for r in rows)), audit.action_of(request))
    devices = [DeviceNeedOut(**device_health(r, r["timezone"], now).model_dump(),
                             resident=ResidentRef(id=r["resident_id"], name=r["resident_name"]),
                             team=TeamRef(id=r["team_id"], name=r["team_name"]))
               for r in rows]
    return DeviceHealthListOut(devices=devices, truncated=truncated)


__all__ = ["DEVICE_KIND_WORDS", "DeviceHealthOut", "TeamRef", "clock_words", "device_health", "health_rules",
           "health_words", "router"]
