"""Doors: ``door_open`` (a door left open) and ``wandering`` (leaving the home at night).

Input: ``door.opened`` / ``door.closed`` (``data.door``, default ``"front"``) and
``motion`` from the resident's motion sensors, all of which are taken to be indoors.
An opened/closed event older than the last one accepted for that door is ignored, so a
late delivery cannot reopen a closed door.

door_open (medium)
    A door opened *outside* the night window arms a timer at opened + ``door_open_minutes``;
    if the door is still open then, the alert opens, whatever the time is by then (a door
    opened at 22:50 and still open at 23:05 is alerted — nothing else would watch it).
    Doors opened inside the night window are watched by the wandering rule instead.
    ``door.closed`` cancels the timer, and the alert once no alerted door is still open.
    Several doors share the resident's one ``door_open`` alert.

wandering (high)
    A door opened inside the night window (resident's wall clock, see `localtime`)
    starts a *watch* with a deadline at opened + ``wander_minutes``. The resident is back
    when, after the opening, every door is closed and a ``motion`` event follows the last
    ``door.closed`` (by device time). Back before the deadline: no alert; back after it:
    the alert is cancelled. Reopening a door while a watch runs requires a new close and
    motion; the first deadline stays. When staff resolve the alert the watch ends; the next
    night-time opening starts a new one.

Sources: the ``door.opened`` event of the (first) door concerned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from processors.context import (
    DOOR,
    WANDER,
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
from processors.jsonstate import (
    dump_source,
    dump_time,
    flag,
    obj,
    opt_source,
    opt_time,
    req_source,
    req_time,
)
from processors.localtime import isoformat_utc
from processors.tracking import UNTRACKED, Tracked
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent

DEFAULT_DOOR = "front"
#: the event types these rules look at
EVENT_TYPES: Final = frozenset({EventType.DOOR_OPENED, EventType.DOOR_CLOSED, EventType.MOTION})


@dataclass(frozen=True, slots=True)
class Door:
    is_open: bool
    changed_at: datetime  # device time of the last accepted opened/closed
    opened_by: Source | None = None  # the door.opened event while open


@dataclass(frozen=True, slots=True)
class Watch:
    """A night-time opening being watched for the resident's return."""

    source: Source
    door: str
    opened_at: datetime
    deadline: datetime
    closed_at: datetime | None = None  # set once every door is closed again


_NO_DOORS: Mapping[str, Door] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DoorsState:
    doors: Mapping[str, Door] = field(default_factory=lambda: _NO_DOORS)
    watch: Watch | None = None
    door_open: Tracked = UNTRACKED
    wandering: Tracked = UNTRACKED

    def any_open(self) -> bool:
        return any(d.is_open for d in self.doors.values())

    def to_json(self) -> dict[str, Any]:
        watch = self.watch
        return {
            "doors": {
                name: {
                    "open": d.is_open,
                    "changed_at": dump_time(d.changed_at),
                    "opened_by": dump_source(d.opened_by),
                }
                for name, d in sorted(self.doors.items())
            },
            "watch": None
            if watch is None
            else {
                "source": dump_source(watch.source),
                "door": watch.door,
                "opened_at": dump_time(watch.opened_at),
                "deadline": dump_time(watch.deadline),
                "closed_at": dump_time(watch.closed_at),
            },
            "door_open": self.door_open.to_json(),
            "wandering": self.wandering.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> DoorsState:
        fields = obj(doc, path)
        doors: dict[str, Door] = {}
        for name, raw in obj(fields.get("doors"), f"{path}.doors").items():
            p = f"{path}.doors.{name}"
            d = obj(raw, p)
            doors[name] = Door(flag(d, "open", p), req_time(d, "changed_at", p), opt_source(d, "opened_by", p))
        watch = None
        if fields.get("watch") is not None:
            p = f"{path}.watch"
            w = obj(fields["watch"], p)
            watch = Watch(
                source=req_source(w, "source", p),
                door=str(w.get("door", DEFAULT_DOOR)),
                opened_at=req_time(w, "opened_at", p),
                deadline=req_time(w, "deadline", p),
                closed_at=opt_time(w, "closed_at", p),
            )
        return cls(
            doors=MappingProxyType(doors),
            watch=watch,
            door_open=Tracked.from_json(fields.get("door_open"), f"{path}.door_open"),
            wandering=Tracked.from_json(fields.get("wandering"), f"{path}.wandering"),
        )


def door_key(ctx: ResidentContext, door: str) -> TimerKey:
    return TimerKey(DOOR, ctx.resident_id, door)


def wander_key(ctx: ResidentContext) -> TimerKey:
    return TimerKey(WANDER, ctx.resident_id)


def door_name(event: Event) -> str:
    value = event.data.get("door")
    return value if isinstance(value, str) and value else DEFAULT_DOOR


def on_event(ctx: ResidentContext, state: DoorsState, event: Event, now: datetime) -> Step[DoorsState]:
    if event.type is EventType.DOOR_OPENED:
        return _opened(ctx, state, event, now)
    if event.type is EventType.DOOR_CLOSED:
        return _closed(ctx, state, event, now)
    if event.type is EventType.MOTION:
        return _motion(ctx, state, event, now)
    return state, [], []


def _opened(ctx: ResidentContext, state: DoorsState, event: Event, now: datetime) -> Step[DoorsState]:
    name, at = door_name(event), event_time(event, now)
    previous = state.doors.get(name)
    if previous is not None and (at < previous.changed_at or previous.is_open):
        return state, [], []  # late delivery, or a repeated "opened" of an open door
    doors = {**state.doors, name: Door(True, at, source_of(event))}
    state = replace(state, doors=MappingProxyType(doors))
    timers: list[Timer] = []
    if state.watch is not None:
        state = replace(state, watch=replace(state.watch, closed_at=None))
    if ctx.in_night(at):
        if state.watch is None:
            deadline = at + timedelta(minutes=ctx.settings.wander_minutes)
            state = replace(state, watch=Watch(source_of(event), name, at, deadline))
            timers.append(Timer(wander_key(ctx), deadline))
    else:
        timers.append(Timer(door_key(ctx, name), at + timedelta(minutes=ctx.settings.door_open_minutes)))
    return state, [], timers


def _closed(ctx: ResidentContext, state: DoorsState, event: Event, now: datetime) -> Step[DoorsState]:
    name, at = door_name(event), event_time(event, now)
    previous = state.doors.get(name)
    if previous is not None and at < previous.changed_at:
        return state, [], []
    doors = {**state.doors, name: Door(False, at)}
    state = replace(state, doors=MappingProxyType(doors))
    intents: list[AlertIntent] = []
    tracked, ended = state.door_open.end(name)
    state = replace(state, door_open=tracked)
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.DOOR_OPEN, now, ended, event=event, detail={"door": name}))
    if state.watch is not None and not state.any_open():
        state = replace(state, watch=replace(state.watch, closed_at=at))
    return state, intents, [Timer(door_key(ctx, name), None)]


def _motion(ctx: ResidentContext, state: DoorsState, event: Event, now: datetime) -> Step[DoorsState]:
    watch = state.watch
    if watch is None or watch.closed_at is None or state.any_open():
        return state, [], []
    if event_time(event, now) < watch.closed_at:
        return state, [], []
    tracked, ended = state.wandering.end()
    state = replace(state, watch=None, wandering=tracked)
    intents: list[AlertIntent] = []
    if ended is not None:
        intents.append(cancel_intent(ctx, AlertKind.WANDERING, now, ended, event=event, detail={"door": watch.door}))
    return state, intents, [Timer(wander_key(ctx), None)]


def on_timer(ctx: ResidentContext, state: DoorsState, key: TimerKey, now: datetime) -> Step[DoorsState]:
    if key.rule == DOOR:
        door = state.doors.get(key.sub)
        if door is None or not door.is_open or door.opened_by is None:
            return state, [], []
        deadline = door.changed_at + timedelta(minutes=ctx.settings.door_open_minutes)
        if deadline > now:  # the limit was raised by a registry reload
            return state, [], [Timer(key, deadline)]
        tracked, fresh = state.door_open.start(key.sub, door.opened_by)
        state = replace(state, door_open=tracked)
        if not fresh:
            return state, [], []
        detail = {
            "door": key.sub,
            "open_since": isoformat_utc(door.changed_at),
            "limit_minutes": ctx.settings.door_open_minutes,
        }
        return (
            state,
            [open_intent(ctx, AlertKind.DOOR_OPEN, now, door.opened_by, detail=detail)],
            [],
        )
    if key.rule == WANDER:
        watch = state.watch
        if watch is None:
            return state, [], []
        if watch.deadline > now:  # re-armed later than this firing (should not happen)
            return state, [], [Timer(key, watch.deadline)]
        tracked, fresh = state.wandering.start("", watch.source)
        state = replace(state, wandering=tracked)
        if not fresh:
            return state, [], []
        detail = {
            "door": watch.door,
            "opened_at": isoformat_utc(watch.opened_at),
            "limit_minutes": ctx.settings.wander_minutes,
        }
        return state, [open_intent(ctx, AlertKind.WANDERING, now, watch.source, detail=detail)], []
    return state, [], []


def on_alert_closed(ctx: ResidentContext, state: DoorsState, kind: AlertKind) -> Step[DoorsState]:
    """Staff resolved an alert: open doors go quiet until closed; the watch ends."""
    if kind is AlertKind.DOOR_OPEN:
        return replace(state, door_open=state.door_open.closed()), [], []
    if kind is AlertKind.WANDERING:
        return replace(state, watch=None, wandering=Tracked()), [], [Timer(wander_key(ctx), None)]
    return state, [], []


def timers_of(ctx: ResidentContext, state: DoorsState) -> list[Timer]:
    """Every timer this state implies (to re-arm after `restore_state`)."""
    timers: list[Timer] = []
    limit = timedelta(minutes=ctx.settings.door_open_minutes)
    for name, door in state.doors.items():
        if door.is_open and not state.door_open.holds(name) and not ctx.in_night(door.changed_at):
            timers.append(Timer(door_key(ctx, name), door.changed_at + limit))
    watch = state.watch
    if watch is not None and not state.wandering.holds():
        timers.append(Timer(wander_key(ctx), watch.deadline))
    return timers


def timer_keys(ctx: ResidentContext, state: DoorsState) -> list[TimerKey]:
    """Every timer key this state may have armed (to disarm a removed resident)."""
    return [door_key(ctx, name) for name in state.doors] + [wander_key(ctx)]
