"""Alerts for staff and operators: list, live stream (SSE), acknowledge, resolve.

Routes talk to the alerts stage only through `AlertsPort` (dashboard/deps.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request
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
    get_alerts,
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
from trygg.alert import Alert
from trygg.contract import AlertState, storable_text

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


@router.get("", response_model=list[Alert], responses=ERRORS,
            summary="Alerts of the caller's teams (operator and admin: all teams)")
async def list_alerts(
    request: Request, who: CurrentUser, audit_log: Audit, app_state: State,
    state: Annotated[AlertState | None, Query(description="only alerts in this state")] = None,
    team: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this team's alerts")] = None,
    since: Annotated[UtcTime | None, Query(description="changed at or after (RFC 3339)")] = None,
) -> list[Alert]:
    require(who, Action.ALERTS_LIST)
    alerts = get_alerts(app_state)
    scope = team_scope(who, team)
    items: list[Alert] = []
    if scope is None or scope:
        items = await call_port(lambda: alerts.list(scope, state.value if state else None, since))
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
