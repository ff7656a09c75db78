"""The shift, for a team leader (docs/shift.md): what happened in the last 8, 12 or 24 hours
for a team — every alert opened or closed in that time, and those still unresolved — with
how long it took to take and to resolve each, who took and who closed it, the notes staff
wrote and how far it escalated. As JSON for the shift page, and as a CSV for a spreadsheet.

Read from `trygg.alerts` and `trygg.alert_transitions` (storage/alert_history_store.py),
which the alert stage writes a moment after each change. Staff see their own teams'
alerts and those escalated to them; operators and admins every team's. One audit row per
resident shown.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard import audit, spreadsheet
from dashboard.audit import AuditLog
from dashboard.authz import Action, Principal, require, residents_shown, team_scope
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Now, Pool, bad_parameter
from dashboard.errors import NotFound, responses
from dashboard.routes_teams import TeamOut, teams
from storage.alert_history_store import ShiftRow, shift_alerts

router = APIRouter(prefix="/api", tags=["shift"])

#: The lengths of shift the page offers.
SHIFT_HOURS: Final = (8, 12, 24)
#: Most alerts in one report (a day of a whole municipality stays far below).
MAX_ALERTS: Final = 2000

TeamQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description="one team (default: all of the caller's)")]
HoursQuery = Annotated[int, Query(description="the last 8, 12 or 24 hours")]


class NoteOut(BaseModel):
    at: datetime
    by: str
    text: str


class ShiftAlertOut(BaseModel):
    alert_id: str
    resident_id: str
    #: None for a resident no longer in the registry
    resident_name: str | None
    team_id: str
    #: every team it was published to, the resident's team first
    teams: list[str]
    kind: str
    priority: str
    state: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    #: resolved or cancelled
    closed_at: datetime | None
    #: who resolved it, or who cancelled it ("system": the condition ended; "resident")
    closed_by: str | None
    #: from opening to taken, and from opening to resolved (not for a cancelled alert)
    seconds_to_take: int | None
    seconds_to_resolve: int | None
    escalation_level: int
    notes: list[NoteOut]


class SummaryOut(BaseModel):
    alerts: int
    open: int
    acknowledged: int
    resolved: int
    cancelled: int
    median_seconds_to_take: int | None
    median_seconds_to_resolve: int | None


class ShiftOut(BaseModel):
    hours: int
    since: datetime
    until: datetime
    #: the teams the report covers
    teams: list[TeamOut]
    summary: SummaryOut
    #: more than MAX_ALERTS alerts: the oldest were left out
    truncated: bool
    #: newest opening first
    alerts: list[ShiftAlertOut]


def _seconds(start: datetime, end: datetime | None) -> int | None:
    return None if end is None else round((end - start).total_seconds())


def shift_alert(row: ShiftRow) -> ShiftAlertOut:
    a = row.alert
    return ShiftAlertOut(
        alert_id=a.alert_id, resident_id=a.resident_id, resident_name=row.resident_name, team_id=a.team_id,
        teams=list(a.teams), kind=a.kind.value, priority=a.priority.value, state=a.state.value,
        opened_at=a.opened_at, acknowledged_at=a.acknowledged_at, acknowledged_by=a.acknowledged_by,
        closed_at=a.closed_at, closed_by=row.closed_by if a.closed_at is not None else None,
        seconds_to_take=_seconds(a.opened_at, a.acknowledged_at),
        seconds_to_resolve=_seconds(a.opened_at, a.resolved_at),
        escalation_level=a.escalation_level,
        notes=[NoteOut(at=n.at, by=n.by, text=n.text) for n in row.notes])


def _median(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known)) if known else None


def summary(alerts: Sequence[ShiftAlertOut]) -> SummaryOut:
    def count(state: str) -> int:
        return sum(1 for a in alerts if a.state == state)

    return SummaryOut(alerts=len(alerts), open=count("open"), acknowledged=count("acknowledged"),
                      resolved=count("resolved"), cancelled=count("cancelled"),
                      median_seconds_to_take=_median([a.seconds_to_take for a in alerts]),
                      median_seconds_to_resolve=_median([a.seconds_to_resolve for a in alerts]))


@dataclass(frozen=True, slots=True)
class _Report:
    out: ShiftOut
    residents: list[str]


async def _report(who: Principal, pool: AsyncConnectionPool, team: str | None, hours: int, now: datetime) -> _Report:
    """The shift of `team` (or all of the caller's teams); 404 for a team the caller may
    not see or that does not exist, 422 for a length of shift not offered."""
    require(who, Action.SHIFT)
    if hours not in SHIFT_HOURS:
        raise bad_parameter("hours", f"must be one of {', '.join(map(str, SHIFT_HOURS))}")
    covered = [t for t in await teams(who, pool) if team is None or t.id == team]
    if team is not None and not covered:
        raise NotFound()
    since = now - timedelta(hours=hours)
    scope = team_scope(who, team)
    rows: list[ShiftRow] = []
    truncated = False
    if scope is None or scope:
        async with pool.connection() as conn:
            rows, truncated = await shift_alerts(conn, teams=scope, since=since, limit=MAX_ALERTS)
    alerts = [shift_alert(r) for r in rows]
    out = ShiftOut(hours=hours, since=since, until=now, teams=covered, summary=summary(alerts),
                   truncated=truncated, alerts=alerts)
    return _Report(out, residents_shown(r.alert for r in rows))


async def _audited(request: Request, who: Principal, audit_log: AuditLog, report: _Report) -> ShiftOut:
    await audit_log.record(who, report.residents, audit.action_of(request))
    return report.out


@router.get("/shift", response_model=ShiftOut, responses=responses(401, 403, 404),
            summary="The last 8, 12 or 24 hours of a team: alerts, times to take and resolve, who, notes")
async def shift(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, now: Now,
                team: TeamQuery = None, hours: HoursQuery = 8) -> ShiftOut:
    return await _audited(request, who, audit_log, await _report(who, pool, team, hours, now))


# --- the CSV ------------------------------------------------------------------------------

#: The CSV's columns, in order (docs/shift.md "The CSV").
CSV_COLUMNS: Final = ("alert_id", "resident_id", "resident_name", "team_id", "kind", "priority", "state",
                      "opened_at", "acknowledged_at", "acknowledged_by", "seconds_to_take", "closed_at", "closed_by",
                      "seconds_to_resolve", "escalation_level", "teams", "notes")
def _local(at: datetime | None, zone: ZoneInfo) -> str:
    return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def csv_text(alerts: Sequence[ShiftAlertOut], zone: ZoneInfo) -> str:
    """The report as a spreadsheet's CSV (dashboard/spreadsheet.py), times in `zone` as
    `YYYY-MM-DD HH:MM:SS`."""
    return spreadsheet.csv_text(CSV_COLUMNS, (
        (a.alert_id, a.resident_id, a.resident_name, a.team_id, a.kind, a.priority, a.state,
         _local(a.opened_at, zone), _local(a.acknowledged_at, zone), a.acknowledged_by, a.seconds_to_take,
         _local(a.closed_at, zone), a.closed_by, a.seconds_to_resolve, a.escalation_level, " ".join(a.teams),
         " | ".join(f"{_local(n.at, zone)} {n.by}: {n.text}" for n in a.notes))
        for a in alerts))


def time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise bad_parameter("tz", "is not a time zone name (such as Europe/Oslo or UTC)") from None


@router.get("/shift.csv", response_class=Response, responses={
    **responses(401, 403, 404),
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "The shift as CSV: UTF-8 with BOM, `;`-separated (docs/shift.md)"}},
            summary="The shift as a CSV file for a spreadsheet")
async def shift_csv(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, now: Now,
                    team: TeamQuery = None, hours: HoursQuery = 8,
                    tz: Annotated[str, Query(max_length=64, description="time zone of the times (IANA name)")] = "UTC",
                    ) -> Response:
    zone = time_zone(tz)
    out = await _audited(request, who, audit_log, await _report(who, pool, team, hours, now))
    name = f"trygg-vakt-{team or 'alle'}-{now.astimezone(zone):%Y%m%d-%H%M}-{hours}t.csv"
    return spreadsheet.attachment(csv_text(out.alerts, zone), name)


__all__ = ["CSV_COLUMNS", "csv_text", "router"]
