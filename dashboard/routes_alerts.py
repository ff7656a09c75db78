"""Alerts for staff and operators: list, live stream (SSE), acknowledge, resolve.

Routes talk to the alerts stage only through `AlertsPort` (dashboard/deps.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.audit import AuditLog
from dashboard.authz import (
    Action,
    Principal,
    check_alert,
    require,
    residents_shown,
    team_scope,
)
from dashboard.deps import ID_PATTERN, AlertDoc, AlertsPort, Audit, CurrentUser, State, UtcTime, get_alerts
from dashboard.errors import (
    ILLEGAL_ERRORS,
    NOT_FOUND_ERRORS,
    NOT_READY_ERRORS,
    AuditJournalError,
    Conflict,
    NotFound,
    Unavailable,
    responses,
)
from trygg.contract import AlertState
from trygg.logging import get_logger

log = get_logger("dashboard")

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

T = TypeVar("T")

AlertId = Annotated[str, Path(pattern=ID_PATTERN, description="alert id")]


class AlertOut(BaseModel):
    """An alert (DESIGN.md §3). `teams`, when present, lists every team it reached."""

    model_config = ConfigDict(extra="allow")

    alert_id: str
    resident_id: str
    team_id: str
    kind: str
    priority: str
    state: str
    opened_at: datetime
    updated_at: datetime
    event_count: int = 1
    trigger: dict[str, Any] | None = None
    last_event: dict[str, Any] | None = None
    location: dict[str, Any] | None = None
    escalation_level: int = 0
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    note: str | None = None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, description="what was done")


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


@router.get("", response_model=list[AlertOut], responses=ERRORS,
            summary="Alerts of the caller's teams (operator and admin: all teams)")
async def list_alerts(
    request: Request, who: CurrentUser, audit_log: Audit, app_state: State,
    state: Annotated[AlertState | None, Query(description="only alerts in this state")] = None,
    team: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this team's alerts")] = None,
    since: Annotated[UtcTime | None, Query(description="changed at or after (RFC 3339)")] = None,
) -> list[AlertDoc]:
    require(who, Action.ALERTS_LIST)
    alerts = get_alerts(app_state)
    scope = team_scope(who, team)
    items: list[AlertDoc] = []
    if scope is None or scope:
        items = await call_port(lambda: alerts.list(scope, state.value if state else None, since))
    await audit_log.record(who, residents_shown(items), audit.action_of(request))
    return items


async def _changed(request: Request, who: Principal, audit_log: AuditLog, doc: AlertDoc) -> AlertDoc:
    await audit_log.record(who, residents_shown([doc]), audit.action_of(request))
    return doc


@router.post("/{alert_id}/ack", response_model=AlertOut, responses=ONE_ALERT_ERRORS,
             summary="Acknowledge: I take it")
async def acknowledge(alert_id: AlertId, request: Request, who: CurrentUser, audit_log: Audit,
                      state: State) -> AlertDoc:
    require(who, Action.ALERTS_CHANGE)
    alerts = get_alerts(state)
    check_alert(who, await call_port(lambda: alerts.get(alert_id)))
    doc = await call_port(lambda: alerts.acknowledge(alert_id, who.username))
    return await _changed(request, who, audit_log, doc)


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses=ONE_ALERT_ERRORS,
             summary="Resolve with a note")
async def resolve(alert_id: AlertId, request: Request, who: CurrentUser, audit_log: Audit, state: State,
                  body: ResolveIn | None = None) -> AlertDoc:
    require(who, Action.ALERTS_CHANGE)
    alerts = get_alerts(state)
    check_alert(who, await call_port(lambda: alerts.get(alert_id)))
    note = body.note if body is not None else None
    doc = await call_port(lambda: alerts.resolve(alert_id, who.username, note))
    return await _changed(request, who, audit_log, doc)


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head + "".join(f"data: {line}\n" for line in data.splitlines() or [""]) + "\n"


async def alert_events(alerts: AlertsPort, who: Principal, audit_log: AuditLog, action: str,
                       ping_s: float, closing: asyncio.Event | None = None) -> AsyncIterator[str]:
    """The SSE body: `alert` events, a `: ping` comment every `ping_s`, and a final
    `reset` (the subscription ended or the server is closing: re-list and reconnect) or
    `expired` (sign in again).

    The stream waits on the port's feed itself, so a change reaches the client one
    loop turn after the alert stage published it (no relay task in between). The first
    alert of each resident on this connection is sent once its audit row is written to
    the journal (fsync'ed right after, shared with whatever else is being logged; no
    database round trip, no wait for the disk), so the stream keeps going while
    PostgreSQL is down."""
    yield "retry: 3000\n: connected\n\n"
    scope = team_scope(who)
    feed = alerts.subscribe(scope) if scope is None or scope else None
    loop = asyncio.get_running_loop()
    waiting: asyncio.Timeout | None = None

    def cut_short() -> None:  # the server is closing: end the current wait now
        if waiting is not None:
            waiting.reschedule(loop.time())

    closer = asyncio.create_task(_when_set(closing, cut_short), name=f"sse-closing-{who.username}") \
        if closing is not None else None
    audited: set[str] = set()
    try:
        while (left := who.expires - time.time()) > 0:
            if closing is not None and closing.is_set():
                yield _sse("reset", "{}")
                return
            try:
                async with asyncio.timeout(min(ping_s, left)) as waiting:
                    doc = await (feed.get() if feed is not None else loop.create_future())  # no teams: pings
            except TimeoutError:
                waiting = None
                if not (closing is not None and closing.is_set()):
                    yield ": ping\n\n"
                continue
            except Exception as exc:  # dropped for falling behind, or the stage stopped
                log.warning("alert subscription ended", error=str(exc))
                yield _sse("reset", "{}")
                return
            waiting = None
            out = AlertOut.model_validate(doc)
            if out.resident_id not in audited:
                try:  # in the journal before the alert is sent; fsync'ed a moment later
                    audit_log.write(who, [out.resident_id], action, wait=False)
                except AuditJournalError as exc:  # no alert without its audit row
                    log.error("alert stream ended: audit row not recorded", error=str(exc)[:200])
                    yield _sse("reset", "{}")
                    return
                audited.add(out.resident_id)
            yield _sse("alert", out.model_dump_json(), out.alert_id)
        yield _sse("expired", json.dumps({"detail": "the session expired; sign in again"}))
    finally:
        if closer is not None:
            closer.cancel()
        if feed is not None:
            feed.close()


async def _when_set(event: asyncio.Event, then: Callable[[], None]) -> None:
    await event.wait()
    then()


@router.get("/stream", response_class=StreamingResponse, responses={
    **ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                    "description": "Server-sent events: `alert` (the alert after a change), a "
                                   "`: ping` comment every 15 s, `reset`, `expired`"}},
            summary="Live alert changes of the caller's teams (SSE)")
async def stream(request: Request, who: CurrentUser, state: State, audit_log: Audit) -> StreamingResponse:
    require(who, Action.ALERTS_STREAM)
    alerts = get_alerts(state)
    return StreamingResponse(
        alert_events(alerts, who, audit_log, audit.action_of(request), state.sse_ping_s, state.closing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


__all__ = ["AlertOut", "alert_events", "call_port", "router"]
