"""Research API (researchers only): counts, response times, export — consenting
residents only, pseudonymous, small groups suppressed (DESIGN.md §7, docs/research.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard import audit
from dashboard.authz import Action, Principal, require
from dashboard.deps import AppState, CurrentUser, Now, Pool, State, UtcTime, get_audit, time_range
from dashboard.errors import responses
from dashboard.research import MIN_GROUP, ParquetBuilder, csv_header, csv_rows, suppress, sync_pseudonyms
from storage.research_store import event_counts, export_rows, response_times
from trygg.contract import EventType

router = APIRouter(prefix="/api/research", tags=["research"])

DEFAULT_SPAN = timedelta(days=30)

Since = Annotated[UtcTime | None, Query(description="from (RFC 3339); default until − 30 days")]
Until = Annotated[UtcTime | None, Query(description="to, exclusive; default now")]


class CountOut(BaseModel):
    bucket_start: datetime
    type: str
    events: int
    residents: int


class CountsOut(BaseModel):
    since: datetime
    until: datetime
    bucket: str
    type: str | None
    min_group: int
    suppressed_groups: int
    rows: list[CountOut]


class Percentiles(BaseModel):
    p50: float | None
    p90: float | None
    p99: float | None


class KindTimesOut(BaseModel):
    kind: str
    alerts: int
    residents: int
    acknowledged: int
    resolved: int
    time_to_acknowledge_s: Percentiles
    time_to_resolve_s: Percentiles


class ResponseTimesOut(BaseModel):
    since: datetime
    until: datetime
    min_group: int
    suppressed_groups: int
    kinds: list[KindTimesOut]


async def _prepare(request: Request, who: Principal, pool: AsyncConnectionPool, state: AppState) -> None:
    """Pseudonyms up to date, and the access logged (one row: no single resident)."""
    async with pool.connection() as conn:
        await sync_pseudonyms(conn, state.pseudonym_key)
    await get_audit(state).record(who, [None], audit.action_of(request))


@router.get("/events", response_model=CountsOut, responses=responses(401, 403),
            summary="Events per time bucket (Europe/Oslo) and type")
async def events(
    request: Request, who: CurrentUser, pool: Pool, state: State, now: Now,
    since: Since = None, until: Until = None,
    bucket: Annotated[Literal["hour", "day", "week", "month"], Query()] = "day",
    event_type: Annotated[EventType | None, Query(alias="type", description="only this event type")] = None,
) -> CountsOut:
    require(who, Action.RESEARCH)
    start, end = time_range(since, until, now, DEFAULT_SPAN)
    await _prepare(request, who, pool, state)
    async with pool.connection() as conn:
        groups = await event_counts(conn, start, end, bucket, event_type.value if event_type else None)
    shown, held = suppress(groups)
    return CountsOut(since=start, until=end, bucket=bucket, type=event_type.value if event_type else None,
                     min_group=MIN_GROUP, suppressed_groups=held,
                     rows=[CountOut.model_validate(g) for g in shown])


def _percentiles(values: list[float] | None) -> Percentiles:
    p = list(values) if values else [None, None, None]
    return Percentiles(p50=p[0], p90=p[1], p99=p[2])


@router.get("/response-times", response_model=ResponseTimesOut, responses=responses(401, 403),
            summary="Seconds from opening to acknowledgement and to resolution, per alert kind")
async def response_times_route(request: Request, who: CurrentUser, pool: Pool, state: State, now: Now,
                               since: Since = None, until: Until = None) -> ResponseTimesOut:
    require(who, Action.RESEARCH)
    start, end = time_range(since, until, now, DEFAULT_SPAN)
    await _prepare(request, who, pool, state)
    async with pool.connection() as conn:
        groups = await response_times(conn, start, end)
    shown, held = suppress(groups)
    kinds = [
        KindTimesOut(kind=g["kind"], alerts=g["alerts"], residents=g["residents"],
                     acknowledged=g["acknowledged"], resolved=g["resolved"],
                     time_to_acknowledge_s=_percentiles(g["acknowledge"] if g["acknowledged"] else None),
                     time_to_resolve_s=_percentiles(g["resolve"] if g["resolved"] else None))
        for g in shown
    ]
    return ResponseTimesOut(since=start, until=end, min_group=MIN_GROUP, suppressed_groups=held, kinds=kinds)


_EXPORT_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}


@router.get("/export", response_class=Response, responses={
    200: {"content": _EXPORT_CONTENT, "description": "Event rows: resident_pseudonym, type, device_kind, "
          "ts, received_at, lat, lon (2 decimals, location events only), data"},
    **responses(401, 403)},
            summary="Event rows with pseudonymous resident ids, as CSV or Parquet")
async def export(
    request: Request, who: CurrentUser, pool: Pool, state: State, now: Now,
    since: Since = None, until: Until = None,
    fmt: Annotated[Literal["csv", "parquet"], Query(alias="format")] = "csv",
) -> Response:
    require(who, Action.RESEARCH)
    start, end = time_range(since, until, now, DEFAULT_SPAN)
    await _prepare(request, who, pool, state)
    name = f"trygg-events-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}"
    if fmt == "parquet":
        builder = ParquetBuilder()
        async with pool.connection() as conn:
            async for rows in export_rows(conn, start, end):
                builder.add(rows)
        return Response(builder.finish(), media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": f'attachment; filename="{name}.parquet"',
                                 "Cache-Control": "no-store"})

    async def body() -> AsyncIterator[str]:
        yield csv_header()
        async with pool.connection() as conn:
            async for rows in export_rows(conn, start, end):
                yield csv_rows(rows)

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                                      "Cache-Control": "no-store"})


__all__ = ["router"]
