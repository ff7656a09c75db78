"""The who-accessed-what log for administrators (docs/contract.md#6-http-api-and-pages, #7-privacy-and-lawful-care)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from dashboard import audit
from dashboard.authz import Action, require
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Pool, UtcTime, bad_parameter
from dashboard.errors import Unavailable, responses
from storage.audit_store import entries

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditOut(BaseModel):
    at: datetime
    actor: str
    role: str
    resident_id: str | None
    action: str


@router.get("", response_model=list[AuditOut], responses=responses(401, 403, 503),
            summary="Every access to a resident's data: who, role, when, what (newest first)")
async def audit_log(
    request: Request, who: CurrentUser, pool: Pool, journal: Audit,
    resident_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this resident")] = None,
    actor: Annotated[str | None, Query(max_length=64, description="only this user")] = None,
    since: Annotated[UtcTime | None, Query()] = None,
    until: Annotated[UtcTime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditOut]:
    require(who, Action.AUDIT)
    if since is not None and until is not None and since >= until:
        raise bad_parameter("until", "must be later than since")
    if actor is not None and "\x00" in actor:
        raise bad_parameter("actor", "must not contain NUL")
    async with pool.connection() as conn:
        try:
            await journal.flush(conn)  # rows recorded a moment ago are shown too
        except psycopg.DatabaseError as exc:
            raise Unavailable("the latest audit rows cannot be stored yet; try again shortly") from exc
        rows = await entries(conn, resident_id, actor, since, until, limit)
    # Reading who looked at a resident is itself an access to that resident's data.
    await journal.record(who, [resident_id], audit.action_of(request))
    return [AuditOut.model_validate(r) for r in rows]


__all__ = ["router"]
