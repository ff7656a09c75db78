"""Research API (researchers only): counts, response times, export — consenting
residents only, pseudonymous, windows widened to whole buckets and days, no time finer
than the hour, small groups suppressed (docs/contract.md#7-privacy-and-lawful-care, docs/research.md "What is
guaranteed").

Every query runs on the research pool (`ResearchPool`), never on staff's: a busy
research pool answers researchers 503 and leaves staff alone (docs/security.md)."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests
from pydantic import BaseModel, Field

from dashboard import audit
from dashboard.authz import Action, Principal, require
from dashboard.deps import (
    AppState,
    CurrentUser,
    Now,
    ResearchPool,
    State,
    UtcTime,
    bad_parameter,
    get_audit,
    time_range,
)
from dashboard.errors import Unavailable, responses
from dashboard.research import (
    ParquetBuilder,
    coarser,
    csv_header,
    csv_rows,
    export_batches,
    prepare_answer,
    research_window,
    suppress,
)
from storage.insights_views import EXPORT_COLUMNS as INSIGHT_COLUMNS
from storage.insights_views import research_feature_rows, research_feature_stats
from storage.research_store import BUCKET_ZONE, BUCKETS, event_counts_json, response_times
from trygg.contract import EventType
from trygg.insights import FEATURE_INDEX, FEATURES

router = APIRouter(prefix="/api/research", tags=["research"])

DEFAULT_SPAN = timedelta(days=30)
_ZONE: Final = ZoneInfo(BUCKET_ZONE)

Since = Annotated[UtcTime | None, Query(description="from (RFC 3339); default until − 30 days")]
Until = Annotated[UtcTime | None, Query(description="to, exclusive; default now")]


class CountOut(BaseModel):
    bucket_start: datetime
    type: str
    events: int
    residents: int


class CountsHead(BaseModel):
    since: datetime
    until: datetime
    bucket: str
    type: str | None
    min_group: int
    suppressed_groups: int


class CountsOut(CountsHead):
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


@contextlib.contextmanager
def _busy_is_503() -> Iterator[None]:
    """No research connection within TRYGG_RESEARCH_POOL_WAIT_S, or too many waiting:
    503 for this researcher (staff have a pool of their own)."""
    try:
        yield
    except (PoolTimeout, TooManyRequests):
        raise Unavailable("research queries are busy; try again in a minute") from None
    except psycopg.errors.QueryCanceled:
        raise Unavailable("the query ran longer than this server allows "
                          "(TRYGG_RESEARCH_STATEMENT_TIMEOUT_S); ask for a shorter period") from None


def _window(since: datetime | None, until: datetime | None, now: datetime, unit: str) -> tuple[datetime, datetime]:
    start, end = time_range(since, until, now, DEFAULT_SPAN)
    try:
        return research_window(start, end, unit)
    except (OverflowError, ValueError):
        raise bad_parameter("until", "is out of range") from None


async def _prepare(request: Request, who: Principal, pool: AsyncConnectionPool, state: AppState) -> None:
    """Pseudonyms and the rollups' cohort up to date, and the access logged (one row: no
    single resident)."""
    with _busy_is_503():
        async with pool.connection() as conn:
            await prepare_answer(conn, state.pseudonym_key)
    await get_audit(state).record(who, [None], audit.action_of(request))


async def counts_answer(pool: AsyncConnectionPool, start: datetime, end: datetime, bucket: str,
                        event_type: str | None, k: int) -> str:
    """The JSON of `CountsOut` for a window cut to whole buckets, after `_prepare`. Its
    rows — a year by the hour is tens of thousands — are written by PostgreSQL
    (`event_counts_json`), not validated and encoded one by one here (that took longer
    than the query)."""
    with _busy_is_503():
        async with pool.connection() as conn:
            rows, held = await event_counts_json(conn, start, end, bucket, event_type, k)
    head = CountsHead(since=start, until=end, bucket=bucket, type=event_type, min_group=k, suppressed_groups=held)
    return f'{head.model_dump_json()[:-1]},"rows":[{rows}]}}'


@router.get("/events", response_model=CountsOut, responses=responses(401, 403, 503),
            summary="Events per time bucket (Europe/Oslo) and type")
async def events(
    request: Request, who: CurrentUser, pool: ResearchPool, state: State, now: Now,
    since: Since = None, until: Until = None,
    bucket: Annotated[Literal["hour", "day", "week", "month"], Query(
        description="not finer than TRYGG_RESEARCH_TIME_GRAIN (hour)")] = "day",
    event_type: Annotated[EventType | None, Query(alias="type", description="only this event type")] = None,
) -> Response:
    require(who, Action.RESEARCH)
    grain, k = state.settings.research_time_grain, state.settings.research_min_group
    if BUCKETS.index(bucket) < BUCKETS.index(grain):
        raise bad_parameter("bucket", f"must be {grain} or coarser")
    start, end = _window(since, until, now, bucket)
    await _prepare(request, who, pool, state)
    body = await counts_answer(pool, start, end, bucket, event_type.value if event_type else None, k)
    return Response(body, media_type="application/json")


def _percentiles(values: list[float] | None) -> Percentiles:
    p = list(values) if values else [None, None, None]
    return Percentiles(p50=p[0], p90=p[1], p99=p[2])


async def response_times_answer(pool: AsyncConnectionPool, start: datetime, end: datetime, k: int) -> str:
    """The JSON of `ResponseTimesOut` for a window cut to whole days, after `_prepare`."""
    with _busy_is_503():
        async with pool.connection() as conn:
            groups = await response_times(conn, start, end)
    shown, held = suppress(groups, k)
    kinds = [
        KindTimesOut(kind=g["kind"], alerts=g["alerts"], residents=g["residents"],
                     acknowledged=g["acknowledged"], resolved=g["resolved"],
                     time_to_acknowledge_s=_percentiles(g["acknowledge"] if g["acknowledged"] else None),
                     time_to_resolve_s=_percentiles(g["resolve"] if g["resolved"] else None))
        for g in shown
    ]
    return ResponseTimesOut(since=start, until=end, min_group=k, suppressed_groups=held,
                            kinds=kinds).model_dump_json()


@router.get("/response-times", response_model=ResponseTimesOut, responses=responses(401, 403, 503),
            summary="Seconds from opening to acknowledgement and to resolution, per alert kind")
async def response_times_route(request: Request, who: CurrentUser, pool: ResearchPool, state: State, now: Now,
                               since: Since = None, until: Until = None) -> Response:
    require(who, Action.RESEARCH)
    k = state.settings.research_min_group
    start, end = _window(since, until, now, coarser(state.settings.research_time_grain, "day"))
    await _prepare(request, who, pool, state)
    return Response(await response_times_answer(pool, start, end, k), media_type="application/json")


_EXPORT_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}


@router.get("/export", response_class=Response, responses={
    200: {"content": _EXPORT_CONTENT, "description": "Event rows: resident_pseudonym, type, device_kind, "
          "ts, received_at (cut to the hour), lat, lon (2 decimals, location events only), data; only rows "
          "whose other columns at least 5 residents share"},
    **responses(401, 403, 503)},
            summary="Event rows with pseudonymous resident ids, as CSV or Parquet")
async def export(
    request: Request, who: CurrentUser, pool: ResearchPool, state: State, now: Now,
    since: Since = None, until: Until = None,
    fmt: Annotated[Literal["csv", "parquet"], Query(alias="format")] = "csv",
) -> Response:
    require(who, Action.RESEARCH)
    settings = state.settings
    grain = settings.research_time_grain
    start, end = _window(since, until, now, grain)
    await _prepare(request, who, pool, state)
    name = f"trygg-events-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}"

    def batches() -> AsyncIterator[list[tuple[object, ...]]]:
        return export_batches(pool, start, end, grain=grain, k=settings.research_min_group,
                              idle_s=settings.research_idle_timeout_s)

    if fmt == "parquet":
        builder = ParquetBuilder()
        with _busy_is_503():
            async for rows in batches():
                builder.add(rows)
        return Response(builder.finish(), media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": f'attachment; filename="{name}.parquet"',
                                 "Cache-Control": "no-store"})

    return await csv_download(name, csv_header(), batches(), csv_rows)


async def csv_download(name: str, header: str, batches: AsyncIterator[list[tuple[Any, ...]]],
                       encode: Callable[[list[tuple[Any, ...]]], str]) -> StreamingResponse:
    """A CSV file `name`.csv streamed from `batches`. The first rows are read before the
    answer starts: a busy pool is still a 503, not a cut-off file."""
    rows_of = batches.__aiter__()
    with _busy_is_503():
        first = await anext(rows_of, None)

    async def body() -> AsyncIterator[str]:
        yield header
        if first is None:
            return
        yield encode(first)
        async for rows in rows_of:
            yield encode(rows)

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                                      "Cache-Control": "no-store"})


# --- the daily features of the early signs of decline (docs/research.md "Daily features") ---


class FeatureStatsOut(BaseModel):
    bucket_start: date = Field(description="the first day of the bucket (a week starts on Monday)")
    feature: str
    residents: int
    days: int = Field(description="resident-days with a value")
    p25: float
    median: float
    p75: float


class InsightStatsOut(BaseModel):
    since: datetime
    until: datetime
    bucket: str
    feature: str | None
    min_group: int
    suppressed_groups: int
    rows: list[FeatureStatsOut]


#: Values of the export are rounded to a multiple of their feature's `min_scale` (the
#: smallest spread a baseline is given: a change smaller than that is not one anyone
#: would notice), so that residents can share a cell of the per-row k rule.
EXPORT_STEPS: Final = tuple((f.name, f.min_scale) for f in FEATURES)

FeatureQuery = Annotated[str | None, Query(pattern=r"^[a-z_]{1,64}$", description="only this feature")]


def _local_days(start: datetime, end: datetime) -> tuple[date, date]:
    """A window cut at Europe/Oslo days as the days [first, last)."""
    return start.astimezone(_ZONE).date(), end.astimezone(_ZONE).date()


@router.get("/insights", response_model=InsightStatsOut, responses=responses(401, 403, 503),
            summary="Daily features of consenting residents per bucket and feature: residents, median, p25, p75")
async def insights(
    request: Request, who: CurrentUser, pool: ResearchPool, state: State, now: Now,
    since: Since = None, until: Until = None,
    bucket: Annotated[Literal["day", "week", "month"], Query(description="Europe/Oslo days")] = "week",
    feature: FeatureQuery = None,
) -> Response:
    require(who, Action.RESEARCH)
    if feature is not None and feature not in FEATURE_INDEX:
        raise bad_parameter("feature", f"must be one of {', '.join(FEATURE_INDEX)}")
    k = state.settings.research_min_group
    start, end = _window(since, until, now, bucket)
    await _prepare(request, who, pool, state)
    first, last = _local_days(start, end)
    with _busy_is_503():
        async with pool.connection() as conn:
            groups = await research_feature_stats(conn, first, last, bucket, feature)
    shown, held = suppress(groups, k)
    rows = [FeatureStatsOut(bucket_start=g["bucket_start"], feature=g["feature"], residents=g["residents"],
                            days=g["days"], p25=g["p"][0], median=g["p"][1], p75=g["p"][2]) for g in shown]
    return Response(InsightStatsOut(since=start, until=end, bucket=bucket, feature=feature, min_group=k,
                                    suppressed_groups=held, rows=rows).model_dump_json(),
                    media_type="application/json")


@router.get("/insights/export", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "Daily feature rows: resident_pseudonym, day, feature, value (rounded to the feature's "
                         "step); only rows whose day, feature and value at least 5 residents share"},
    **responses(401, 403, 503)},
            summary="Daily features with pseudonymous resident ids, as CSV")
async def insights_export(request: Request, who: CurrentUser, pool: ResearchPool, state: State, now: Now,
                          since: Since = None, until: Until = None) -> Response:
    require(who, Action.RESEARCH)
    settings = state.settings
    start, end = _window(since, until, now, "day")
    await _prepare(request, who, pool, state)
    name = f"trygg-insights-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}"
    k = settings.research_min_group

    def days(conn: psycopg.AsyncConnection[Any], first: datetime, last: datetime
             ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        return research_feature_rows(conn, *_local_days(first, last), steps=EXPORT_STEPS, k=k)

    batches = export_batches(pool, start, end, grain="day", k=k, idle_s=settings.research_idle_timeout_s,
                             step_rows=days)

    def encode(rows: list[tuple[Any, ...]]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(
            (p, d.isoformat(), f, format(v.normalize(), "f")) for p, d, f, v in rows)
        return out.getvalue()

    return await csv_download(name, ",".join(INSIGHT_COLUMNS) + "\n", batches, encode)


__all__ = ["CountsOut", "InsightStatsOut", "ResponseTimesOut", "counts_answer", "response_times_answer", "router"]
