"""The who-accessed-what log for administrators (docs/contract.md#6-http-api-and-pages, #7-privacy-and-lawful-care):
filtered by resident, user, time and action, paged, and as CSV (the admin page's
"Tilgangslogg · Audit log", docs/admin.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import psycopg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from dashboard import audit, spreadsheet
from dashboard.authz import Action, Principal, require
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Pool, UtcTime, bad_parameter
from dashboard.errors import Unavailable, responses
from storage.audit_store import AuditFilter, entries

router = APIRouter(prefix="/api/audit", tags=["audit"])

#: Response header with the `before` of the next page, when there may be one.
NEXT_HEADER: Final = "X-Next-Before"
CSV_COLUMNS: Final = ("at", "actor", "role", "resident_id", "action")
#: The most rows one CSV holds (narrow the filters for more).
CSV_MAX: Final = 100_000


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    resident_id: str | None
    action: str


def _filters(resident_id: str | None, actor: str | None, since: datetime | None, until: datetime | None,
             action: str | None, before: int | None) -> AuditFilter:
    if since is not None and until is not None and since >= until:
        raise bad_parameter("until", "must be later than since")
    for name, value in (("actor", actor), ("action", action)):
        if value is not None and "\x00" in value:
            raise bad_parameter(name, "must not contain NUL")
    return AuditFilter(resident_id, actor, since, until, action or None, before)



async def _rows(request: Request, who: Principal, pool: Any, journal: Audit, where: AuditFilter,
                limit: int) -> list[dict[str, Any]]:
    require(who, Action.AUDIT)
    async with pool.connection() as conn:
        try:
            await journal.flush(conn)  # rows recorded a moment ago are shown too
        except psycopg.DatabaseError as exc:
            raise Unavailable("the latest audit rows cannot be stored yet; try again shortly") from exc
        rows = await entries(conn, where, limit)
    # Reading who looked at a resident is itself an access to that resident's data.
    await journal.record(who, [where.resident_id], audit.action_of(request))
    return rows


@router.get("", response_model=list[AuditOut], responses={
    200: {"headers": {NEXT_HEADER: {"description": "`before` for the next page", "schema": {"type": "integer"}}}},
    **responses(401, 403, 503)},
    summary="Every access to a resident's data: who, role, when, what (newest first, paged)")
async def audit_log(
    request: Request, response: Response, who: CurrentUser, pool: Pool, journal: Audit,
    resident_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this resident")] = None,
    actor: Annotated[str | None, Query(max_length=64, description="only this user")] = None,
    since: Annotated[UtcTime | None, Query(description="at or after")] = None,
    until: Annotated[UtcTime | None, Query(description="before")] = None,
    action: Annotated[str | None, Query(max_length=100, description="part of the action, e.g. `/card`")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description=f"rows older than this id ({NEXT_HEADER})")
                      ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditOut]:
    where = _filters(resident_id, actor, since, until, action, before)
    rows = await _rows(request, who, pool, journal, where, limit)
    if len(rows) == limit:
        response.headers[NEXT_HEADER] = str(rows[-1]["id"])
    return [AuditOut.model_validate(r) for r in rows]


@router.get(".csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": f"Columns {', '.join(CSV_COLUMNS)}; newest first; at most {CSV_MAX:,} rows"},
    **responses(401, 403, 503)},
    summary="The audit log as CSV, with the same filters")
async def audit_csv(
    request: Request, who: CurrentUser, pool: Pool, journal: Audit,
    resident_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[UtcTime | None, Query()] = None,
    until: Annotated[UtcTime | None, Query()] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    where = _filters(resident_id, actor, since, until, action, None)
    rows = await _rows(request, who, pool, journal, where, CSV_MAX)
    name = f"trygg-audit{'-' + resident_id if resident_id else ''}.csv"
    return spreadsheet.attachment(spreadsheet.csv_text(CSV_COLUMNS, ([row[c] for c in CSV_COLUMNS] for row in rows)),
                                  name)


__all__ = ["router"]
