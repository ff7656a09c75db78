"""Inactivity: no sign of life at home for ``inactivity_hours`` of *daytime*.

Who is watched
    Residents with at least one ``motion_sensor`` or ``door_sensor`` in the registry.
    Others never get this alert.

What counts as activity
    ``motion``, every ``door.*`` event (opened, closed, unlocked, locked), ``alarm.button``
    and ``alarm.cancel`` (both are the resident pressing a button), and ``location`` — the
    latter only when the resident has a location basis valid that day (docs/contract.md#7-privacy-and-lawful-care:
    positions are otherwise not used). Heartbeats and battery reports are not activity.

How the hours are counted
    Only time between 07:00 and 22:00 on the resident's local wall clock counts
    (`localtime.add_daytime`). The alert opens at the first instant at which the daytime
    elapsed since the last activity reaches ``inactivity_hours``, so it always opens during
    daytime. With the default 12 h: last activity 07:00 → alert at 19:00 the same day;
    last activity 20:00 → 2 h count that evening, 10 h the next day → alert at 17:00;
    last activity at 23:30 → alert at 19:00 the next day. Night hours are neither counted
    nor do they reset the clock. Limits beyond 15 h simply span several days.

    The clock starts at the last activity (device time, clamped to now) or, when nothing is
    known about the resident, when supervision starts (`start`). The timer is first armed
    at last activity + ``inactivity_hours`` of real time — a lower bound, since counting
    only daytime can only make it later — and moved to the exact instant when it fires, so
    an activity event costs O(1) and the daytime arithmetic runs once per quiet period. Any activity cancels an
    open alert and restarts the clock. When staff resolve the alert while the resident is
    still inactive, the rule stays quiet until the next activity.

Source: the last activity event ``(device_id, event_id)``, or
``("resident:<id>", "inactive@<UTC time the clock started>")`` when the clock started
without an event.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from processors.context import (
    INACTIVITY,
    ResidentContext,
    Source,
    Step,
    Timer,
    TimerKey,
    cancel_intent,
    event_time,
    open_intent,
    source_of,
)
from processors.jsonstate import dump_source, dump_time, obj, opt_source, opt_time
from processors.localtime import add_daytime, as_utc, isoformat_utc
from processors.tracking import UNTRACKED, Tracked
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent

ACTIVITY: Final = frozenset(
    {
        EventType.MOTION,
        EventType.DOOR_OPENED,
        EventType.DOOR_CLOSED,
        EventType.DOOR_UNLOCKED,
        EventType.DOOR_LOCKED,
        EventType.ALARM_BUTTON,
        EventType.ALARM_CANCEL,
        EventType.LOCATION,
    }
)


@dataclass(frozen=True, slots=True)
class ActivityState:
    last_at: datetime | None = None  # when the inactivity clock (re)started
    last_source: Source | None = None  # the activity event, None when started without one
    tracked: Tracked = UNTRACKED

    def to_json(self) -> dict[str, Any]:
        return {
            "last_at": dump_time(self.last_at),
            "last_source": dump_source(self.last_source),
            "tracked": self.tracked.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> ActivityState:
        fields = obj(doc, path)
        return cls(
            last_at=opt_time(fields, "last_at", path),
            last_source=opt_source(fields, "last_source", path),
            tracked=Tracked.from_json(fields.get("tracked"), f"{path}.tracked"),
        )


def timer_key(ctx: ResidentContext) -> TimerKey:
    return TimerKey(INACTIVITY, ctx.resident_id)


def limit(ctx: ResidentContext) -> timedelta:
    return _hours(ctx.settings.inactivity_hours)


@functools.cache
def _hours(hours: float) -> timedelta:
    """One timedelta per setting value: `limit` runs for every activity event."""
    return timedelta(hours=hours)


def deadline(ctx: ResidentContext, state: ActivityState) -> datetime | None:
    """The exact instant the alert is due (daytime counting)."""
    if state.last_at is None:
        return None
    return add_daytime(state.last_at, limit(ctx), ctx.tz)


def earliest(ctx: ResidentContext, state: ActivityState) -> datetime | None:
    """A cheap lower bound of `deadline`: the limit in real time."""
    return None if state.last_at is None else state.last_at + limit(ctx)


def is_activity(ctx: ResidentContext, event: Event, now: datetime) -> bool:
    if event.type not in ACTIVITY:
        return False
    if event.type is EventType.LOCATION:
        return ctx.may_use_location(event_time(event, now))
    return True


def on_event(ctx: ResidentContext, state: ActivityState, event: Event, now: datetime) -> Step[ActivityState]:
    if not ctx.watches_inactivity or not is_activity(ctx, event, now):
        return state, [], []
    at = event_time(event, now)
    if state.last_at is not None and at < state.last_at:
        return state, [], []  # an older event delivered late; the clock already moved on
    tracked, ended = state.tracked.end()
    state = ActivityState(last_at=at, last_source=source_of(event), tracked=tracked)
    intents: list[AlertIntent] = []
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.INACTIVITY, now, ended, event=event))
    return state, intents, [Timer(timer_key(ctx), at + limit(ctx))]


def start(ctx: ResidentContext, state: ActivityState, now: datetime) -> Step[ActivityState]:
    """Supervision starts: count from `now` unless a last activity is already known."""
    if not ctx.watches_inactivity:
        return state, [], []
    if state.last_at is None:
        state = ActivityState(last_at=as_utc(now), last_source=None, tracked=state.tracked)
    return state, [], timers_of(ctx, state)


def on_timer(ctx: ResidentContext, state: ActivityState, now: datetime) -> Step[ActivityState]:
    due = deadline(ctx, state)
    last_at = state.last_at
    if not ctx.watches_inactivity or due is None or last_at is None:
        return state, [], []
    if due > now:  # armed at the real-time lower bound: move it to the exact instant
        return state, [], [Timer(timer_key(ctx), due)]
    source = state.last_source or (
        f"resident:{ctx.resident_id}",
        f"inactive@{isoformat_utc(last_at)}",
    )
    tracked, fresh = state.tracked.start("", source)
    state = replace(state, tracked=tracked)
    if not fresh:
        return state, [], []
    detail = {
        "last_activity_at": isoformat_utc(last_at),
        "limit_hours": ctx.settings.inactivity_hours,
    }
    return state, [open_intent(ctx, AlertKind.INACTIVITY, now, source, detail=detail)], []


def on_alert_closed(ctx: ResidentContext, state: ActivityState) -> Step[ActivityState]:
    return replace(state, tracked=state.tracked.closed()), [], []


def timers_of(ctx: ResidentContext, state: ActivityState) -> list[Timer]:
    due = earliest(ctx, state)
    if not ctx.watches_inactivity or due is None or state.tracked.holds():
        return []
    return [Timer(timer_key(ctx), due)]
