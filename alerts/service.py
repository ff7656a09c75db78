"""`AlertService`: every alert's state, flood control and escalation, with no I/O.

It is synchronous and pure in the sense of STYLE.md: it takes intents, staff actions and
`now`, and returns `Change`s for the stage to publish and store. Nothing here sleeps,
reads a clock, or touches a socket or the database, so it is tested instantly.

Intents from the processors (`trygg.pipeline.AlertIntent`):

- **OPEN** — if the alert id derived from the intent's kind and source already exists
  (a re-processed event, also after a restart), nothing changes and nothing is
  published. An event that re-uses the id of another (the derived alert's trigger, or a
  trigger attached to the alert it would join, has another type or device time: a
  device whose counter reset) is a new event: its source is `rekeyed_id`, as the gateway
  and the store key it (docs/ingest.md "Re-used ids"). Otherwise, if an alert with the
  same flood key is still open or acknowledged (same resident and kind; for
  `device_offline` and `battery_low` also the same device), the trigger attaches to it:
  `event_count` + 1, `updated_at`, `last_event`, and it is republished at once (so a new
  `alarm.button` press is never hidden). An attached trigger does not re-open an
  acknowledged alert or restart its escalation; a higher priority raises the alert's
  priority. Otherwise a new alert opens on the resident's team and its escalation timer
  starts.
- **CANCEL** — the condition ended: the alert derived from the intent's source and the
  unresolved alert of the flood key (for per-device kinds without a device: every one of
  the resident and kind) are cancelled. With `only_if_open` (the resident's
  `alarm.cancel`) an acknowledged alert stays acknowledged. The actor is "resident" for
  an `alarm.cancel`, else "system". An `alarm.cancel` ends only alerts it can be meant
  for (`covers`): raised by an event at or before the cancel's device time and at most
  `cancel_window` (30 min) before it, with no trigger after it; a late cancel, or one
  for an old alert, leaves the alert open (docs/rules.md).

Staff: `acknowledge` stops escalation; `resolve` (also straight from open, see
`alerts.lifecycle`) closes the alert. Closed alerts are remembered for a while (a
bounded LRU) so a late action answers `IllegalTransition` rather than `AlertNotFound`,
and a re-processed event of a closed alert is still recognised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from alerts import lifecycle
from alerts.errors import AlertNotFound
from alerts.escalation import EscalationTimers, Timeouts, next_team
from alerts.model import (
    PER_DEVICE_KINDS,
    RESIDENT,
    SOURCES_KEPT,
    SYSTEM,
    UNASSIGNED_TEAM,
    Alert,
    Change,
    ChangeReason,
    FloodKey,
    Source,
    alert_flood_key,
    alert_id_for,
    event_ref,
    flood_key,
    higher,
    ref_time,
    same_event,
    source_key,
)
from trygg.alert import utc
from trygg.contract import AlertState, Event, EventType, rekeyed_id
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry, Team

#: closed alerts remembered in memory
CLOSED_KEPT: Final = 10_000
#: how long before an `alarm.cancel` (device time) an alert may have been raised for the
#: cancel to end it (docs/rules.md)
CANCEL_WINDOW: Final = timedelta(minutes=30)


class AlertService:
    def __init__(self, registry: Registry, timeouts: Timeouts | None = None, *,
                 closed_kept: int = CLOSED_KEPT, cancel_window: timedelta = CANCEL_WINDOW) -> None:
        self._timeouts = timeouts or Timeouts()
        self._closed_kept = closed_kept
        self._cancel_window = cancel_window
        self._active: dict[str, Alert] = {}
        self._closed: OrderedDict[str, Alert] = OrderedDict()
        self._flood: dict[FloodKey, str] = {}
        self._timers = EscalationTimers()
        self._teams: Mapping[str, Team] = {}
        self._resident_team: Mapping[str, str] = {}
        self.set_registry(registry)

    # ------------------------------------------------------------------ registry

    def set_registry(self, registry: Registry) -> None:
        """Use a reloaded registry for new alerts and further escalation steps."""
        self._teams = {t.id: t for t in registry.teams}
        self._resident_team = {r.id: r.team for r in registry.residents}

    def team_of(self, team_id: str) -> Team | None:
        return self._teams.get(team_id)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._active)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._active or alert_id in self._closed

    def get(self, alert_id: str) -> Alert:
        """The alert (unresolved or recently closed); raises AlertNotFound."""
        return self._find(alert_id)

    def active(self, teams: set[str] | frozenset[str] | None = None) -> list[Alert]:
        """The unresolved alerts, oldest first; only those that reached one of `teams`
        when given."""
        alerts = sorted(self._active.values(), key=lambda a: a.opened_at)
        return [a for a in alerts if teams is None or not teams.isdisjoint(a.teams)]

    def next_deadline(self) -> datetime | None:
        return self._timers.next_deadline()

    # ------------------------------------------------------------------ intents

    def apply(self, intents: Iterable[AlertIntent]) -> list[Change]:
        changes: list[Change] = []
        for intent in intents:
            if intent.action is IntentAction.OPEN:
                changes.extend(self.open(intent))
            else:
                changes.extend(self.cancel(intent))
        return changes

    def open(self, intent: AlertIntent) -> list[Change]:
        now = utc(intent.at)
        source = self._distinct_source(intent)
        alert_id = alert_id_for(intent.kind, source)
        if alert_id in self._active or alert_id in self._closed:
            return []  # the same event again: already alerted
        key = flood_key(intent.resident_id, intent.kind, intent.device_id)
        existing_id = self._flood.get(key)
        if existing_id is not None:
            return self._attach(self._active[existing_id], intent, source)
        team = self._resident_team.get(intent.resident_id, UNASSIGNED_TEAM)
        ref = _ref(intent, source)
        alert = Alert(
            alert_id=alert_id, resident_id=intent.resident_id, team_id=team, kind=intent.kind,
            priority=intent.priority, state=AlertState.OPEN, opened_at=now, updated_at=now,
            event_count=1, trigger=ref, last_event=ref, location=intent.location,
            teams=(team,), device_id=intent.device_id, escalated_at=now,
            detail=dict(intent.detail), sources=(_source_entry(intent, source),),
        )
        alert, steps = lifecycle.opened(alert, SYSTEM)
        self._active[alert_id] = alert
        self._flood[key] = alert_id
        self._arm(alert, now)
        return [Change(ChangeReason.OPENED, alert, steps)]

    def _distinct_source(self, intent: AlertIntent) -> Source:
        """The intent's source, or — when its event re-uses the id of an event the
        service knows (the trigger of the alert derived from it, or a trigger attached
        to the unresolved alert it would join) with another type or device time — the
        re-keyed source of the new event. The gateway re-keys such an event itself while
        it remembers the first; after a restart, or past its window, this is where the
        two are told apart."""
        event = intent.event
        source = intent.source
        if event is None or source != (event.device_id, event.event_id):
            return source  # a timer's condition, or a condition named by an earlier event
        derived = alert_id_for(intent.kind, source)
        known = self._active.get(derived) or self._closed.get(derived)
        if known is not None:
            reused = not same_event(known.trigger, event)
        else:
            joins = self._flood.get(flood_key(intent.resident_id, intent.kind, intent.device_id))
            reused = joins is not None and _reuses(self._active[joins].sources, source, event)
        return (event.device_id, rekeyed_id(event.event_id, event.type, event.ts)) if reused else source

    def _attach(self, alert: Alert, intent: AlertIntent, source: Source) -> list[Change]:
        src = _source_entry(intent, source)
        if src in alert.sources or source_key(source) in alert.sources:
            return []  # this trigger was attached before (remembered without its time: the same)
        at = utc(intent.at)
        raised = higher(alert.priority, intent.priority)
        attached = replace(
            alert, event_count=alert.event_count + 1, last_event=_ref(intent, source),
            sources=(*alert.sources, src)[-SOURCES_KEPT:],
            location=alert.location if intent.location is None else intent.location,
            priority=raised, version=alert.version + 1, updated_at=max(alert.updated_at, at),
        )
        self._active[alert.alert_id] = attached
        if raised is not alert.priority and attached.state is AlertState.OPEN:
            self._arm(attached, at)
        return [Change(ChangeReason.ATTACHED, attached)]

    def cancel(self, intent: AlertIntent) -> list[Change]:
        targets: list[Alert] = []
        by_source = self._active.get(alert_id_for(intent.kind, intent.source))
        if by_source is not None:
            targets.append(by_source)
        for alert in self._by_key(intent):
            if alert not in targets:
                targets.append(alert)
        resident_cancel = intent.event if intent.event is not None and \
            intent.event.type is EventType.ALARM_CANCEL else None
        actor = RESIDENT if resident_cancel is not None else SYSTEM
        changes: list[Change] = []
        for alert in targets:
            if intent.only_if_open and alert.state is not AlertState.OPEN:
                continue  # acknowledged: someone is on the way, the resident's cancel does not end it
            if resident_cancel is not None and not covers(resident_cancel, alert, self._cancel_window):
                continue  # a late cancel, or one not meant for this alert: it stays open
            cancelled, steps = lifecycle.cancel(alert, actor, utc(intent.at), _cancel_note(intent))
            self._close(cancelled)
            changes.append(Change(ChangeReason.CANCELLED, cancelled, steps))
        return changes

    def _by_key(self, intent: AlertIntent) -> list[Alert]:
        if intent.kind in PER_DEVICE_KINDS and intent.device_id is None:
            return [a for a in self._active.values()
                    if a.resident_id == intent.resident_id and a.kind is intent.kind]
        alert_id = self._flood.get(flood_key(intent.resident_id, intent.kind, intent.device_id))
        return [] if alert_id is None else [self._active[alert_id]]

    # ------------------------------------------------------------------ staff

    def acknowledge(self, alert_id: str, actor: str, now: datetime, note: str | None = None) -> Change:
        alert, steps = lifecycle.acknowledge(self._find(alert_id), actor, utc(now), note)
        self._active[alert_id] = alert
        self._timers.disarm(alert_id)
        return Change(ChangeReason.ACKNOWLEDGED, alert, steps)

    def resolve(self, alert_id: str, actor: str, now: datetime, note: str | None = None) -> Change:
        alert, steps = lifecycle.resolve(self._find(alert_id), actor, utc(now), note)
        self._close(alert)
        return Change(ChangeReason.RESOLVED, alert, steps)

    def _find(self, alert_id: str) -> Alert:
        alert = self._active.get(alert_id) or self._closed.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    # ------------------------------------------------------------------ escalation

    def _arm(self, alert: Alert, now: datetime) -> None:
        timeout = self._timeouts.of(alert.priority)
        if timeout is None or alert.state is not AlertState.OPEN:
            self._timers.disarm(alert.alert_id)
            return
        since = alert.escalated_at or alert.opened_at
        deadline = since + timeout
        self._timers.arm(alert.alert_id, deadline if deadline > now else now)

    def due(self, now: datetime) -> list[Change]:
        """Escalation steps whose time has come (each re-armed for the next step)."""
        now = utc(now)
        changes: list[Change] = []
        for alert_id in self._timers.pop_due(now):
            alert = self._active.get(alert_id)
            if alert is None or alert.state is not AlertState.OPEN:
                continue
            team = next_team(self._teams, alert.teams)
            alert, steps = lifecycle.escalate(alert, now, team)
            self._active[alert_id] = alert
            self._arm(alert, now)
            reason = ChangeReason.ESCALATED if team is not None else ChangeReason.REMINDED
            changes.append(Change(reason, alert, steps))
        return changes

    # ------------------------------------------------------------------ closing, restore

    def _close(self, alert: Alert) -> None:
        self._active.pop(alert.alert_id, None)
        self._timers.disarm(alert.alert_id)
        key = alert_flood_key(alert)
        if self._flood.get(key) == alert.alert_id:
            del self._flood[key]
        self._remember_closed(alert)

    def _remember_closed(self, alert: Alert) -> None:
        self._closed[alert.alert_id] = alert
        self._closed.move_to_end(alert.alert_id)
        while len(self._closed) > self._closed_kept:
            self._closed.popitem(last=False)

    def restore(self, alerts: Iterable[Alert], now: datetime) -> list[Alert]:
        """Take alerts back from storage after a restart; returns those taken.

        Ids already known are skipped (what the service holds is at least as new), so
        restoring twice, or late after the database came back, is harmless. Open alerts
        re-arm their escalation: one timeout after the last step, or `now` if overdue.
        """
        now = utc(now)
        taken: list[Alert] = []
        for alert in sorted(alerts, key=lambda a: a.opened_at):
            if alert.alert_id in self:
                continue
            taken.append(alert)
            if alert.closed:
                self._remember_closed(alert)
                continue
            self._active[alert.alert_id] = alert
            key = alert_flood_key(alert)
            if key not in self._flood:
                self._flood[key] = alert.alert_id
            self._arm(alert, now)
        return taken

    def republish(self) -> list[Change]:
        """Every unresolved alert as it is (after the broker connection was re-established)."""
        return [Change(ChangeReason.REPUBLISHED, a) for a in sorted(self._active.values(),
                                                                      key=lambda a: a.opened_at)]


def _reuses(sources: tuple[str, ...], source: Source, event: Event) -> bool:
    """Whether `sources` hold another event (another type or time) under `source`, or
    hold `event` itself under its re-keyed id (the gateway re-keyed it before a restart)."""
    entry, bare = source_key(source, event), source_key(source)
    if entry in sources:
        return False
    if any(s.count("|") >= 3 and s.rsplit("|", 2)[0] == bare for s in sources):
        return True
    rekeyed = (event.device_id, rekeyed_id(event.event_id, event.type, event.ts))
    return source_key(rekeyed, event) in sources


def _source_entry(intent: AlertIntent, source: Source) -> str:
    """What the alert remembers of an attached source: with the event's type and time
    when the source is the event's own key (as sent, or re-keyed by the gateway or here),
    so that the same entry comes out however the event got its id."""
    event = intent.event
    own = event is not None and intent.source == (event.device_id, event.event_id)
    return source_key(source, event if own else None)


def _ref(intent: AlertIntent, source: Source) -> dict[str, object]:
    """The intent's `trigger` / `last_event` object, naming a re-keyed event by the id it
    is stored under."""
    ref = event_ref(intent)
    if source is not intent.source:
        ref["event_id"] = source[1]
    return ref


def covers(cancel: Event, alert: Alert, window: timedelta) -> bool:
    """Whether the resident's `alarm.cancel` may end `alert`: the event that raised it
    happened at or before the cancel and at most `window` before it, and no trigger
    attached since happened after it. Times are device times, each never later than
    its receipt (a fast device clock cannot move a cancel forward). An alert whose
    trigger time cannot be read is not covered: when in doubt it stays open."""
    at = min(utc(cancel.ts), utc(cancel.received_at))
    raised = _event_time(alert.trigger)
    if raised is None or not at - window <= raised <= at:
        return False
    latest = _event_time(alert.last_event)
    return latest is None or latest <= at


def _event_time(ref: dict[str, object]) -> datetime | None:
    ts, received = ref_time(ref, "ts"), ref_time(ref, "received_at")
    if ts is None or received is None:
        return None
    return min(ts, received)


def _cancel_note(intent: AlertIntent) -> str:
    if intent.event is not None:
        return f"cancelled: {intent.event.type}"
    reason = intent.detail.get("reason")
    return f"cancelled: {reason}" if isinstance(reason, str) else "cancelled: condition ended"


__all__ = ["CANCEL_WINDOW", "CLOSED_KEPT", "AlertService", "covers"]
