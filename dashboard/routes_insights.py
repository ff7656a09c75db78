"""Early signs of decline for staff (docs/insights.md, docs/api.md "Changes worth a look"):
a resident's daily features with their baseline band and notices, a team's notices not
yet seen, and marking one seen with a note.

A notice is a low-priority review item, never an alarm: nothing here reaches the alert
stage. Who may see it follows the resident card (staff of the resident's team,
operators, admins; everyone else 404, as for a resident that does not exist); relatives
only with the resident's `relatives_insights` consent, and then only a calm sentence per
notice, never the values. Every answer with a resident's data records one audit row per
resident (dashboard/audit.py), and so does marking a notice seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboard import audit
from dashboard.authz import Action, Principal, View, require, resident_view, team_scope
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Now, Pool
from dashboard.errors import Conflict, Forbidden, NotFound, responses
from dashboard.routes_teams import ResidentRef, TeamOut, teams
from storage.insights_views import mark_seen, notice_resident, resident_days, resident_notices, team_notices
from storage.residents_store import ResidentRow, get_resident
from trygg.contract import Role, storable_text
from trygg.insights import FEATURE_INDEX, FEATURES

router = APIRouter(prefix="/api", tags=["insights"])

ResidentId = Annotated[str, Path(pattern=ID_PATTERN, description="resident id")]
TeamId = Annotated[str, Path(pattern=ID_PATTERN, description="team id")]

#: Who may mark a notice seen: those who take alerts (staff of the resident's team,
#: operators); an administrator reads the card but does not do care work.
MARKERS: Final = frozenset({Role.STAFF, Role.OPERATOR})
#: How far back a team's list shows notices already seen.
SEEN_SHOWN: Final = timedelta(days=14)
#: Most notices of each kind (open, seen) in a team's list.
TEAM_LIMIT: Final = 200
MAX_NOTE: Final = 1000

#: What a relative reads of a notice: no value, no baseline, no staff name, no note.
RELATIVE_WORDING: Final = (
    "Hjemmetjenesten har sett en endring i «{label}» over noen uker, og følger med.",
    "The home care team noticed a change in {label} over a few weeks and is keeping an eye on it.",
)


class FeatureOut(BaseModel):
    """A daily feature (trygg/insights.py FEATURES): its name, words and unit [nb, en]."""

    name: str
    label: list[str]
    unit: list[str]
    direction: int = Field(description="1: more is worse, -1: less is worse, 0: a change either way")
    decimals: int
    clock: bool = Field(description="the value is a local clock time in hours (7.5 = 07:30)")


FEATURES_OUT: Final = [
    FeatureOut(name=f.name, label=[f.label_nb, f.label_en], unit=[f.unit_nb, f.unit_en], direction=int(f.direction),
               decimals=f.decimals, clock=f.clock)
    for f in FEATURES
]


class DayOut(BaseModel):
    """One computed day: arrays in the order of `features`, null where unknown (values)
    or while there is no baseline yet (usual, low, high)."""

    day: date
    values: list[float | None]
    usual: list[float | None]
    low: list[float | None]
    high: list[float | None]
    usable: bool = Field(description="the sensors were heard: the day counts for the baseline")
    away: bool
    hours_unheard: int


class NoticeOut(BaseModel):
    """A change worth a look, as staff see it."""

    notice_id: int
    resident_id: str
    feature: str
    label: list[str]
    direction: int
    day: date = Field(description="the day it was raised on (the resident's local day)")
    value: float = Field(description="mean of the usable days of the last `window_days`")
    usual: float
    low: float
    high: float
    window_days: int
    reason: list[str] = Field(description="[Norwegian, English]")
    created_at: datetime
    seen_at: datetime | None
    seen_by: str | None
    seen_note: str | None


class TeamNoticeOut(NoticeOut):
    resident: ResidentRef
    team_id: str


class InsightsOut(BaseModel):
    resident_id: str
    since: date
    may_mark_seen: bool = Field(description="the caller may mark these notices seen (staff, operators)")
    features: list[FeatureOut]
    days: list[DayOut]
    notices: list[NoticeOut]


class RelativeNoticeOut(BaseModel):
    """A notice as a relative reads it: a calm sentence, the day, whether home care has
    looked at it."""

    model_config = ConfigDict(extra="forbid")

    day: date
    summary: list[str] = Field(description="[Norwegian, English]")
    looked_at: bool


class RelativeInsightsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resident_id: str
    notices: list[RelativeNoticeOut]


class TeamInsightsOut(BaseModel):
    team: TeamOut
    seen_since: datetime
    open: list[TeamNoticeOut]
    seen: list[TeamNoticeOut]


class SeenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=MAX_NOTE, description="what was done or decided")

    @field_validator("note")
    @classmethod
    def _storable(cls, note: str | None) -> str | None:
        if note is not None and not storable_text(note):
            raise ValueError("the note holds characters that cannot be stored (NUL or a lone UTF-16 surrogate)")
        return (note.strip() or None) if note is not None else None


def insights_view(who: Principal, resident: ResidentRow | None) -> View:
    """Care view as for the resident card; a relative's own person with the
    `relatives_insights` consent; 404 for everyone and everything else."""
    if who.role is Role.RELATIVE:
        if resident is not None and resident.id in who.residents and resident.consent("relatives_insights"):
            return View.RELATIVE
        raise NotFound()
    return resident_view(who, resident, Action.RESIDENT_CARD)


def _num(value: float | None) -> float | None:
    """A stored `real` as JSON: rounded to what it holds (no 1.2000000476837158), NaN as null."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _nums(values: Sequence[float | None] | None) -> list[float | None]:
    return [_num(v) for v in values or ()]


def _label(feature: str) -> list[str]:
    index = FEATURE_INDEX.get(feature)
    if index is None:  # a feature a later version wrote
        return [feature, feature]
    return [FEATURES[index].label_nb, FEATURES[index].label_en]


def notice_out(row: dict[str, Any]) -> NoticeOut:
    return NoticeOut(
        notice_id=row["notice_id"], resident_id=row["resident_id"], feature=row["feature"],
        label=_label(row["feature"]), direction=row["direction"], day=row["day"], value=_num(row["value"]) or 0.0,
        usual=_num(row["usual"]) or 0.0, low=_num(row["band_low"]) or 0.0, high=_num(row["band_high"]) or 0.0,
        window_days=row["window_days"], reason=[row["reason_nb"], row["reason_en"]], created_at=row["created_at"],
        seen_at=row["seen_at"], seen_by=row["seen_by"], seen_note=row["seen_note"])


def for_relatives(row: dict[str, Any]) -> RelativeNoticeOut:
    nb, en = _label(row["feature"])
    return RelativeNoticeOut(day=row["day"], looked_at=row["seen_at"] is not None,
                             summary=[RELATIVE_WORDING[0].format(label=nb.lower()),
                                      RELATIVE_WORDING[1].format(label=en.lower())])


@router.get("/residents/{resident_id}/insights", response_model=InsightsOut | RelativeInsightsOut,
            responses=responses(401, 404, 503),
            summary="A resident's daily features against the baseline, and the changes worth a look")
async def resident_insights(
    resident_id: ResidentId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, now: Now,
    days: Annotated[int, Query(ge=1, le=400, description="how many days back (the resident's local days)")] = 90,
) -> JSONResponse:
    async with pool.connection() as conn:
        resident = await get_resident(conn, resident_id)
        view = insights_view(who, resident)
        assert resident is not None
        since = resident.local_date(now) - timedelta(days=days)
        notices = await resident_notices(conn, resident_id, since)
        rows = await resident_days(conn, resident_id, since) if view is View.CARE else []
    await audit_log.record(who, [resident_id], audit.action_of(request))
    out: InsightsOut | RelativeInsightsOut
    if view is View.CARE:
        out = InsightsOut(
            resident_id=resident_id, since=since, may_mark_seen=who.role in MARKERS, features=FEATURES_OUT,
            notices=[notice_out(n) for n in notices],
            days=[DayOut(day=r["day"], values=_nums(r["vals"]), usual=_nums(r["usual"]), low=_nums(r["band_low"]),
                         high=_nums(r["band_high"]), usable=r["usable"], away=r["away"],
                         hours_unheard=r["hours_unheard"]) for r in rows])
    else:
        out = RelativeInsightsOut(resident_id=resident_id, notices=[for_relatives(n) for n in notices])
    return JSONResponse(out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/teams/{team}/insights", response_model=TeamInsightsOut, responses=responses(401, 403, 404, 503),
            summary="Changes worth a look in a team: notices not yet seen, newest first, and those seen lately")
async def team_insights(team: TeamId, request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
                        now: Now) -> JSONResponse:
    require(who, Action.RESIDENTS_LIST)
    covered = [t for t in await teams(who, pool) if t.id == team]
    if not covered:  # not one of the caller's teams, or none such
        raise NotFound()
    scope = team_scope(who, team)
    seen_since = now - SEEN_SHOWN
    async with pool.connection() as conn:
        rows = await team_notices(conn, scope, seen_since, TEAM_LIMIT)
    await audit_log.record(who, list(dict.fromkeys(r["resident_id"] for r in rows)), audit.action_of(request))

    def item(row: dict[str, Any]) -> TeamNoticeOut:
        return TeamNoticeOut(**notice_out(row).model_dump(), team_id=row["team_id"],
                             resident=ResidentRef(id=row["resident_id"], name=row["resident_name"]))

    out = TeamInsightsOut(team=covered[0], seen_since=seen_since,
                          open=[item(r) for r in rows if r["seen_at"] is None],
                          seen=[item(r) for r in rows if r["seen_at"] is not None])
    return JSONResponse(out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.post("/insights/notices/{notice_id}/seen", response_model=NoticeOut,
             responses=responses(401, 403, 404, 409, 503),
             summary="Mark a change worth a look as seen, with a note; who and when are recorded")
async def notice_seen(
    notice_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="notice id")],
    request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
    body: SeenIn | None = None,
) -> NoticeOut:
    if who.role not in MARKERS:
        raise Forbidden(f"the role {who.role.value} may not mark notices seen")
    note = body.note if body is not None else None
    async with pool.connection() as conn:  # one transaction: committed when the block ends
        resident_id = await notice_resident(conn, notice_id)
        resident = await get_resident(conn, resident_id) if resident_id is not None else None
        resident_view(who, resident, Action.RESIDENT_CARD)  # 404 for a resident not the caller's
        assert resident_id is not None
        row = await mark_seen(conn, notice_id, who.username, note)
        if row is None:
            raise Conflict("the notice has already been marked seen")
        # durable before the change is committed: an audit journal that cannot be written
        # rolls the change back (503)
        await audit_log.record(who, [resident_id], audit.action_of(request))
    return notice_out(row)


__all__ = ["FEATURES_OUT", "insights_view", "router"]
