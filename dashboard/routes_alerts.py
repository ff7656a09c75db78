"""Alerts for staff and operators: list, live stream (SSE), acknowledge, resolve.

Routes talk to the alerts stage only through `AlertsPort` (dashboard/deps.py). The stage
keeps only unresolved alerts at hand: closed ones (resolved, cancelled) are listed from
`trygg.alerts` (storage/alert_history_store.py), newest closed first, one page at a time
with an opaque cursor (`X-Next-Before`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Final, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboard import audit
from dashboard.alert_stream import AlertStream
from dashboard.audit import AuditLog
from dashboard.authz import (
    Action,
    Principal,
    check_alert,
    require,
    residents_shown,
    team_scope,
)
from dashboard.deps import (
    ID_PATTERN,
    Audit,
    CurrentUser,
    State,
    StreamCredential,
    StreamUser,
    UtcTime,
    bad_parameter,
    get_alerts,
    get_pool,
)
from dashboard.errors import (
    ILLEGAL_ERRORS,
    NOT_FOUND_ERRORS,
    NOT_READY_ERRORS,
    Conflict,
    NotFound,
    Unavailable,
    responses,
)
from storage.alert_history_store import CLOSED_STATES, Position, closed_alerts
from trygg.alert import Alert, rfc3339
from trygg.contract import storable_text

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

T = TypeVar("T")

AlertId = Annotated[str, Path(pattern=ID_PATTERN, description="alert id")]


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, description="what was done")

    @field_validator("note")
    @classmethod
    def _storable(cls, note: str | None) -> str | None:
        if note is not None and not storable_text(note):
            raise ValueError("the note holds characters that cannot be stored (NUL or a lone UTF-16 surrogate)")
        return note


ERRORS = responses(401, 403, 503)
ONE_ALERT_ERRORS = responses(401, 403, 404, 409, 503)


def _conflict_message(exc: Exception) -> str:
    from_state = getattr(exc, "from_state", None)
    to_state = getattr(exc, "to_state", None)
    if from_state is None or to_state is None:
        return "the alert's state does not allow this"
    if str(from_state) == str(to_state):
        return f"the alert is already {from_state}"
    return f"the alert is {from_state}; it cannot be {to_state}"


async def call_port(step: Callable[[], Awaitable[T]]) -> T:
    """Run one port call, turning its errors into API answers."""
    try:
        return await step()
    except NOT_FOUND_ERRORS:
        raise NotFound() from None
    except ILLEGAL_ERRORS as exc:
        raise Conflict(_conflict_message(exc)) from None
    except NOT_READY_ERRORS:
        raise Unavailable("the alert stage is starting; try again in a moment") from None


#: What `state=` accepts: the four states, and `closed` for resolved or cancelled.
StateFilter = Literal["open", "acknowledged", "resolved", "cancelled", "closed"]

#: Where the next page begins, as the API hands it out.
NEXT_BEFORE: Final = "X-Next-Before"

_CURSOR_ID: Final = re.compile(ID_PATTERN)


def encode_cursor(position: Position) -> str:
    """An opaque cursor: base64url of `[closed_at, alert_id]`."""
    closed_at, alert_id = position
    raw = json.dumps([rfc3339(closed_at), alert_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor of `encode_cursor` stands for; 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        closed_at, alert_id = json.loads(raw)
        at = datetime.fromisoformat(closed_at)
        if at.tzinfo is None or not isinstance(alert_id, str) or not _CURSOR_ID.match(alert_id):
            raise ValueError(alert_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise bad_parameter("before", "is not a cursor this API handed out (take it from X-Next-Before)") from None
    return at, alert_id


@router.get("", response_model=list[Alert], responses={
    **ERRORS, 200: {"description": "The alerts", "headers": {NEXT_BEFORE: {
        "description": "closed states: more alerts exist; pass this as `before` for the next page",
        "schema": {"type": "string"}}}}},
            summary="Alerts of the caller's teams (operator and admin: all); closed ones from the database, paged")
async def list_alerts(
    request: Request, response: Response, who: CurrentUser, audit_log: Audit, app_state: State,
    state: Annotated[StateFilter | None, Query(
        description="only alerts in this state; `closed`: resolved or cancelled")] = None,
    team: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this team's alerts")] = None,
    since: Annotated[UtcTime | None, Query(
        description="unresolved: changed at or after; closed: closed at or after (RFC 3339)")] = None,
    until: Annotated[UtcTime | None, Query(description="closed states only: closed before (RFC 3339)")] = None,
    resident: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this resident's alerts")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="closed states only: at most this many")] = 50,
    before: Annotated[str | None, Query(max_length=400, description=(
        "closed states only: the page after this cursor (from the header X-Next-Before)"))] = None,
) -> list[Alert]:
    require(who, Action.ALERTS_LIST)
    scope = team_scope(who, team)
    items: list[Alert] = []
    if state in (*CLOSED_STATES, "closed"):
        if since is not None and until is not None and until <= since:
            raise bad_parameter("until", "must be later than since")
        position = None if before is None else decode_cursor(before)
        if scope is None or scope:
            async with get_pool(app_state).connection() as conn:
                page = await closed_alerts(conn, teams=scope, states=CLOSED_STATES if state == "closed" else (state,),
                                           since=since, until=until, resident=resident, before=position, limit=limit)
            items = page.alerts
            if page.next_before is not None:
                response.headers[NEXT_BEFORE] = encode_cursor(page.next_before)
    else:
        for name, value in (("until", until), ("before", before)):
            if value is not None:
                raise bad_parameter(name, "applies to closed alerts only (state=resolved, cancelled or closed)")
        alerts = get_alerts(app_state)
        if scope is None or scope:
            found = await call_port(lambda: alerts.list(scope, state, since))
            items = [a for a in found if resident is None or a.resident_id == resident]
    await audit_log.record(who, residents_shown(items), audit.action_of(request))
    return items


async def _changed(request: Request, who: Principal, audit_log: AuditLog, alert: Alert) -> Alert:
    await audit_log.record(who, residents_shown([alert]), audit.action_of(request))
    return alert


@router.post("/{alert_id}/ack", response_model=Alert, responses=ONE_ALERT_ERRORS,
             summary="Acknowledge: I take it")
async def acknowledge(alert_id: AlertId, request: Request, who: CurrentUser, audit_log: Audit,
                      state: State) -> Alert:
    require(who, Action.ALERTS_CHANGE)
    alerts = get_alerts(state)
    check_alert(who, await call_port(lambda: alerts.get(alert_id)))
    alert = await call_port(lambda: alerts.acknowledge(alert_id, who.username))
    return await _changed(request, who, audit_log, alert)


@router.post("/{alert_id}/resolve", response_model=Alert, responses=ONE_ALERT_ERRORS,
             summary="Resolve with a note")
async def resolve(alert_id: AlertId, request: Request, who: CurrentUser, audit_log: Audit, state: State,
                  body: ResolveIn | None = None) -> Alert:
    require(who, Action.ALERTS_CHANGE)
    alerts = get_alerts(state)
    check_alert(who, await call_port(lambda: alerts.get(alert_id)))
    note = body.note if body is not None else None
    alert = await call_port(lambda: alerts.resolve(alert_id, who.username, note))
    return await _changed(request, who, audit_log, alert)


@router.get("/stream", response_class=StreamingResponse, responses={  # for the schema; the answer is AlertStream
    **ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                    "description": "Server-sent events: `alert` (the alert after a change), a "
                                   "`: ping` comment every 15 s, `reset` (list again and reconnect: "
                                   "also when the caller's role, teams or residents change), `expired` "
                                   "(sign in again: also at sign-out or a new password)"}},
            summary="Live alert changes of the caller's teams (SSE)")
async def stream(request: Request, who: StreamUser, credential: StreamCredential, state: State,
                 audit_log: Audit) -> AlertStream:
    require(who, Action.ALERTS_STREAM)
    alerts = get_alerts(state)
    return AlertStream(alerts, who, audit_log, audit.action_of(request), state.sse_ping_s, state.closing,
                       rights=state.rights, credential=credential)


__all__ = ["call_port", "router"]
