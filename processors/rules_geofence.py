"""``geofence_exit``: the resident has left every safe zone.

Only residents with safe zones are watched, and only positions the resident's location
basis allows on that day (docs/contract.md#7-privacy-and-lawful-care); other ``location`` events are ignored here.
Fixes are classified with their accuracy circle (`geofence.ZoneSet.classify`):

- an OUTSIDE fix (circle wholly outside every zone) extends the outside run and resets
  the inside run; an INSIDE fix (circle wholly inside a zone) does the opposite;
- an AMBIGUOUS fix (circle overlapping a border) is neutral: it neither counts nor breaks
  a run, so GPS jitter at a border cannot make an alert flap;
- fixes not newer than the last one used (device time) are ignored.

Exit is confirmed by 2 OUTSIDE fixes without an INSIDE fix between them → OPEN (high),
source = the first of those fixes, ``location`` = the newest fix. While the alert is
open every further OUTSIDE fix is sent as an OPEN with the same source, so staff see the
latest position on the attached alert. Return is confirmed by 2 INSIDE fixes without an
OUTSIDE fix between them → CANCEL. If staff resolve the alert while the resident is
still outside, the rule stays quiet until a confirmed return; the next confirmed exit
raises a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from processors.context import (
    ResidentContext,
    Source,
    Step,
    cancel_intent,
    event_time,
    open_intent,
    source_of,
)
from processors.errors import StateError
from processors.geofence import Placement
from processors.jsonstate import dump_source, dump_time, obj, opt_int, opt_source, opt_time
from processors.tracking import UNTRACKED, Tracked
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent

#: consecutive unambiguous fixes that confirm an exit or a return
CONFIRM_FIXES: Final = 2


@dataclass(frozen=True, slots=True)
class GeoState:
    where: Placement | None = None  # confirmed INSIDE or OUTSIDE; None while unknown
    outside_run: int = 0
    inside_run: int = 0
    exit_source: Source | None = None  # first OUTSIDE fix of the current outside run
    last_fix_at: datetime | None = None
    tracked: Tracked = UNTRACKED

    def to_json(self) -> dict[str, Any]:
        return {
            "where": None if self.where is None else str(self.where),
            "outside_run": self.outside_run,
            "inside_run": self.inside_run,
            "exit_source": dump_source(self.exit_source),
            "last_fix_at": dump_time(self.last_fix_at),
            "tracked": self.tracked.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> GeoState:
        fields = obj(doc, path)
        where = fields.get("where")
        if where not in (None, Placement.INSIDE, Placement.OUTSIDE):
            raise StateError(f"{path}.where", "must be 'inside', 'outside' or null")
        return cls(
            where=None if where is None else Placement(where),
            outside_run=opt_int(fields, "outside_run", path),
            inside_run=opt_int(fields, "inside_run", path),
            exit_source=opt_source(fields, "exit_source", path),
            last_fix_at=opt_time(fields, "last_fix_at", path),
            tracked=Tracked.from_json(fields.get("tracked"), f"{path}.tracked"),
        )


def position(event: Event) -> dict[str, Any]:
    """The `location` of an intent: the fix as sent by the device."""
    return {
        "lat": float(event.data["lat"]),
        "lon": float(event.data["lon"]),
        "accuracy_m": float(event.data.get("accuracy_m", 0.0)),
    }


def on_event(ctx: ResidentContext, state: GeoState, event: Event, now: datetime) -> Step[GeoState]:
    zones = ctx.zones
    if event.type is not EventType.LOCATION or zones is None:
        return state, [], []
    at = event_time(event, now)
    if not ctx.may_use_location(at):
        return state, [], []
    if state.last_fix_at is not None and at <= state.last_fix_at:
        return state, [], []
    fix = position(event)
    placement = zones.classify(fix["lat"], fix["lon"], fix["accuracy_m"])
    state = replace(state, last_fix_at=at)
    if placement is Placement.OUTSIDE:
        return _outside(ctx, state, event, fix, now)
    if placement is Placement.INSIDE:
        return _inside(ctx, state, event, fix, now)
    return state, [], []


def _outside(ctx: ResidentContext, state: GeoState, event: Event, fix: dict[str, Any], now: datetime) -> Step[GeoState]:
    run = state.outside_run + 1
    exit_source = state.exit_source if state.exit_source is not None and run > 1 else source_of(event)
    state = replace(state, outside_run=run, inside_run=0, exit_source=exit_source)
    if state.where is not Placement.OUTSIDE:
        if run < CONFIRM_FIXES:
            return state, [], []
        state = replace(state, where=Placement.OUTSIDE)
        tracked, fresh = state.tracked.start("", exit_source)
        state = replace(state, tracked=tracked)
        if not fresh:
            return state, [], []
    elif not state.tracked.is_alerted():
        return state, [], []
    alert_source = state.tracked.source or exit_source
    assert ctx.zones is not None
    zone_name, distance = ctx.zones.nearest(fix["lat"], fix["lon"])
    detail = {"nearest_zone": zone_name, "distance_m": round(distance)}
    intent = open_intent(ctx, AlertKind.GEOFENCE_EXIT, now, alert_source, event=event, location=fix, detail=detail)
    return state, [intent], []


def _inside(ctx: ResidentContext, state: GeoState, event: Event, fix: dict[str, Any], now: datetime) -> Step[GeoState]:
    run = state.inside_run + 1
    state = replace(state, inside_run=run, outside_run=0, exit_source=None)
    if state.where is None:
        return replace(state, where=Placement.INSIDE), [], []
    if state.where is Placement.INSIDE or run < CONFIRM_FIXES:
        return state, [], []
    tracked, ended = state.tracked.end()
    state = replace(state, where=Placement.INSIDE, tracked=tracked)
    intents: list[AlertIntent] = []
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.GEOFENCE_EXIT, now, ended, event=event, location=fix))
    return state, intents, []


def on_alert_closed(ctx: ResidentContext, state: GeoState) -> Step[GeoState]:
    return replace(state, tracked=state.tracked.closed()), [], []


def on_zones_removed(ctx: ResidentContext, state: GeoState, now: datetime) -> Step[GeoState]:
    """The resident no longer has safe zones: forget the position, cancel an open alert."""
    _, ended = state.tracked.end()
    intents: list[AlertIntent] = []
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.GEOFENCE_EXIT, now, ended, detail={"reason": "no safe zones"}))
    return GeoState(), intents, []
