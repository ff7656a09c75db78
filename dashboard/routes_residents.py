"""Residents: the registry list, a resident's card (address, access, contacts, devices'
health), a resident's timeline, the calm status and the alert history in plain words.

Every response with a resident's data records one audit row per resident shown, durable
in the audit journal before the response leaves (dashboard/audit.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.authz import Action, View, may_see_location, require, resident_view, team_scope
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Now, Pool, State, UtcTime, time_range
from dashboard.errors import NotFound, responses
from dashboard.routes_alerts import call_port
from dashboard.routes_teams import DeviceHealthOut, TeamRef, device_health, health_rules
from storage.alert_history_store import recent_alerts
from storage.residents_store import (
    get_resident,
    last_contact,
    last_location,
    list_residents,
    resident_card,
    resident_events,
    stored_open_alerts,
)
from trygg.alert import Alert
from trygg.contract import AlertKind

router = APIRouter(prefix="/api/residents", tags=["residents"])

ResidentId = Annotated[str, Path(pattern=ID_PATTERN, description="resident id")]

#: Alerts that make a resident's state `alert`; any other unresolved alert is `attention`.
URGENT: Final = frozenset({"critical", "high"})

#: What relatives read about an alert: the kind in plain words, no sensor detail.
KIND_WORDING: Final[dict[str, str]] = {
    AlertKind.SMOKE: "The smoke alarm went off",
    AlertKind.ALARM: "The safety alarm was used",
    AlertKind.FALL: "A possible fall was detected",
    AlertKind.WANDERING: "Went out at night",
    AlertKind.GEOFENCE_EXIT: "Is outside the usual area",
    AlertKind.DOOR_OPEN: "A door has been open for a while",
    AlertKind.INACTIVITY: "No activity for a while",
    AlertKind.DEVICE_OFFLINE: "A safety device is not responding",
    AlertKind.BATTERY_LOW: "A safety device needs charging",
}


class DeviceOut(BaseModel):
    id: str
    kind: str
    heartbeat_s: float


class ResidentOut(BaseModel):
    """A resident as in the registry document (docs/contract.md#3-registry-file)."""

    id: str
    name: str
    team: str
    timezone: str
    night: dict[str, str]
    settings: dict[str, Any]
    safe_zones: list[dict[str, Any]]
    consents: dict[str, bool]
    location_basis: dict[str, Any] | None = None
    devices: list[DeviceOut]


class AccessOut(BaseModel):
    key_box: str | None = None
    door_lock: str | None = None
    notes: str | None = None


class ContactOut(BaseModel):
    name: str
    relation: str | None = None
    phone: str
    notes: str | None = None


class CardOut(BaseModel):
    """The resident card (docs/contract.md#the-resident-card): for staff of the
    resident's team, operators and admins only."""

    id: str
    name: str
    team: TeamRef
    address: str | None
    access: AccessOut
    contacts: list[ContactOut]
    devices: list[DeviceHealthOut]


class EventOut(BaseModel):
    device_id: str
    event_id: str
    type: str
    ts: datetime
    received_at: datetime
    data: dict[str, Any]


class TimelineOut(BaseModel):
    resident_id: str
    since: datetime
    until: datetime
    locations_shown: bool
    truncated: bool
    events: list[EventOut]


class RelativeAlertOut(BaseModel):
    """An alert as a relative sees it."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    summary: str
    being_handled: bool
    opened_at: datetime


class HistoryAlertOut(BaseModel):
    """A past or current alert as a relative sees it: no device, event, position, staff
    name or note."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    summary: str
    state: Literal["open", "acknowledged", "resolved", "cancelled"]
    opened_at: datetime
    closed_at: datetime | None


class AlertHistoryOut(BaseModel):
    resident_id: str
    since: datetime
    alerts: list[HistoryAlertOut]


class LocationOut(BaseModel):
    lat: float | None
    lon: float | None
    accuracy_m: float | None = None
    ts: datetime


class StatusOut(BaseModel):
    resident_id: str
    name: str = Field(description="the resident's name, as the registry has it (a relative sees their own person's)")
    state: Literal["ok", "alert", "attention"]
    open_alerts: list[Alert | RelativeAlertOut]
    last_contact_at: datetime | None
    location: LocationOut | None = None


@router.get("", response_model=list[ResidentOut], responses=responses(401, 403),
            summary="Residents of the caller's teams (operator and admin: all)")
async def residents(
    request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
    team: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this team")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    require(who, Action.RESIDENTS_LIST)
    scope = team_scope(who, team)
    async with pool.connection() as conn:
        rows = [] if scope is not None and not scope else await list_residents(conn, scope, limit, offset)
    await audit_log.record(who, [r["id"] for r in rows], audit.action_of(request))
    return rows


@router.get("/{resident_id}/card", response_model=CardOut, responses=responses(401, 404),
            summary="The resident card: address, access, contact persons, team, devices and their health")
async def card(resident_id: ResidentId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
               state: State, now: Now) -> JSONResponse:
    async with pool.connection() as conn:
        resident_view(who, await get_resident(conn, resident_id), Action.RESIDENT_CARD)
        row = await resident_card(conn, resident_id, health_rules(state, now))
    if row is None:  # gone since it was checked
        raise NotFound()
    await audit_log.record(who, [resident_id], audit.action_of(request))
    fields = row["card"] or {}
    out = CardOut(id=row["id"], name=row["name"], team=TeamRef(id=row["team_id"], name=row["team_name"]),
                  address=fields.get("address"), access=AccessOut.model_validate(fields.get("access") or {}),
                  contacts=[ContactOut.model_validate(c) for c in fields.get("contacts") or []],
                  devices=[device_health(d, row["timezone"], now) for d in row["devices"]])
    return JSONResponse(out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/{resident_id}/events", response_model=TimelineOut, responses=responses(401, 404),
            summary="A resident's timeline: stored events in [since, until)")
async def events(
    resident_id: ResidentId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, now: Now,
    since: Annotated[UtcTime | None, Query(description="from (RFC 3339); default until − 24 h")] = None,
    until: Annotated[UtcTime | None, Query(description="to, exclusive; default now + 24 h")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 2000,
) -> TimelineOut:
    start, end = time_range(since, until, now, timedelta(hours=48), default_until=timedelta(hours=24))
    async with pool.connection() as conn:
        resident = await get_resident(conn, resident_id)
        resident_view(who, resident, Action.RESIDENT_EVENTS)
        assert resident is not None
        # docs/contract.md#7-privacy-and-lawful-care: without a valid location basis, positions are not shown.
        with_locations = resident.location_basis_valid(now)
        rows, truncated = await resident_events(conn, resident_id, start, end,
                                                with_locations=with_locations, limit=limit)
    await audit_log.record(who, [resident_id], audit.action_of(request))
    return TimelineOut(resident_id=resident_id, since=start, until=end, locations_shown=with_locations,
                       truncated=truncated, events=[EventOut.model_validate(r) for r in rows])


def overall_state(open_alerts: list[Alert]) -> Literal["ok", "alert", "attention"]:
    if any(a.priority in URGENT for a in open_alerts):
        return "alert"
    return "attention" if open_alerts else "ok"


def for_relatives(alert: Alert) -> RelativeAlertOut:
    return RelativeAlertOut(kind=alert.kind.value, summary=KIND_WORDING.get(alert.kind, "Something needs attention"),
                            being_handled=alert.state == "acknowledged", opened_at=alert.opened_at)


@router.get("/{resident_id}/status", response_model=StatusOut, responses=responses(401, 404, 503),
            summary="All is well / being handled; last contact; position only if permitted")
async def status(resident_id: ResidentId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
                 state: State, now: Now) -> JSONResponse:
    async with pool.connection() as conn:
        resident = await get_resident(conn, resident_id)
        view = resident_view(who, resident, Action.RESIDENT_STATUS)
        assert resident is not None
        if state.alerts is not None:
            port = state.alerts
            found = await call_port(lambda: port.open_alerts_of(resident_id))
        else:
            found = [Alert.from_record(row) for row in await stored_open_alerts(conn, resident_id)]
        open_alerts = [a for a in found if a.active and a.resident_id == resident_id]
        show_location = may_see_location(view, resident, now)
        location = await last_location(conn, resident_id, now) if show_location else None
        contact = await last_contact(conn, resident_id, now)
    await audit_log.record(who, [resident_id], audit.action_of(request))
    shown: list[Alert | RelativeAlertOut] = (
        list(open_alerts) if view is View.CARE else [for_relatives(a) for a in open_alerts]
    )
    out = StatusOut(resident_id=resident_id, name=resident.name, state=overall_state(open_alerts), open_alerts=shown,
                    last_contact_at=contact,
                    location=LocationOut.model_validate(location) if location else None)
    return JSONResponse(out.model_dump(mode="json", exclude=None if show_location else {"location"}),
                        headers={"Cache-Control": "no-store"})


@router.get("/{resident_id}/alert-history", response_model=AlertHistoryOut, responses=responses(401, 404, 503),
            summary="Recent alerts in plain words, newest first, also closed ones (the relatives' history)")
async def alert_history(
    resident_id: ResidentId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, state: State,
    now: Now,
    days: Annotated[int, Query(ge=1, le=90, description="how many days back")] = 30,
    limit: Annotated[int, Query(ge=1, le=100, description="at most this many alerts")] = 20,
) -> AlertHistoryOut:
    since = now - timedelta(days=days)
    async with pool.connection() as conn:
        resident_view(who, await get_resident(conn, resident_id), Action.RESIDENT_STATUS)
        found = {row["alert_id"]: row for row in await recent_alerts(conn, resident_id, since, limit)}
    if state.alerts is not None:  # fresher than what the alert stage has stored so far
        port = state.alerts
        for alert in await call_port(lambda: port.open_alerts_of(resident_id)):
            if alert.resident_id == resident_id and alert.active:
                found[alert.alert_id] = {"alert_id": alert.alert_id, "kind": alert.kind.value,
                                         "state": alert.state.value, "opened_at": alert.opened_at, "closed_at": None}
    newest = sorted(found.values(), key=lambda a: a["opened_at"], reverse=True)[:limit]
    alerts = [HistoryAlertOut(kind=str(a["kind"]), state=a["state"],
                              summary=KIND_WORDING.get(str(a["kind"]), "Something needed attention"),
                              opened_at=a["opened_at"], closed_at=a["closed_at"])
              for a in newest]
    await audit_log.record(who, [resident_id], audit.action_of(request))
    return AlertHistoryOut(resident_id=resident_id, since=since, alerts=alerts)


__all__ = ["KIND_WORDING", "overall_state", "router"]
