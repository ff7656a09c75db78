"""The lifecycle of one alert (DESIGN.md §4): pure functions, no I/O, `now` passed in.

```
open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
  │ ╲                      │
  │  ╲──resolve (implicit acknowledgement)──▶ resolved
  └──cancel──▶ cancelled ◀─┘ cancel (not with only_if_open)
```

Decisions where DESIGN.md is silent:

- **Resolve directly from open is allowed.** A worker who arrives on site may resolve
  without pressing "I take it" first. The acknowledgement is recorded implicitly: two
  transitions at the same instant (open → acknowledged, acknowledged → resolved) by the
  same actor, and `acknowledged_at`/`acknowledged_by` are set, so response-time figures
  (time to acknowledge) stay meaningful.
- **Acknowledging twice is illegal** (`IllegalTransition(acknowledged → acknowledged)`):
  the second worker learns that someone else already took it.
- Resolving or acknowledging a resolved or cancelled alert is illegal; cancelling one
  is a no-op for the rules (the condition ended after staff had closed it).
- An escalation step is not a state change, but it is recorded as a transition from the
  state to itself with the team in the note, so the trail shows who was alerted when.

Each function changes the alert in place, bumps `version` and `updated_at`, and returns
the transitions it recorded. Callers snapshot the alert afterwards (`Change.of`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from alerts.errors import IllegalTransition
from alerts.model import Alert, Transition
from trygg.contract import AlertState

ALLOWED: Final[dict[AlertState, frozenset[AlertState]]] = {
    AlertState.OPEN: frozenset({AlertState.ACKNOWLEDGED, AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.ACKNOWLEDGED: frozenset({AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.RESOLVED: frozenset(),
    AlertState.CANCELLED: frozenset(),
}

IMPLICIT_ACK_NOTE: Final = "acknowledged by resolving"


def allowed(from_state: AlertState, to_state: AlertState) -> bool:
    return to_state in ALLOWED[from_state]


def check(alert: Alert, to_state: AlertState) -> None:
    if not allowed(alert.state, to_state):
        raise IllegalTransition(alert.alert_id, alert.state, to_state)


def record(alert: Alert, at: datetime, to_state: AlertState, actor: str, note: str | None,
           from_state: AlertState | None = None, *, opening: bool = False) -> Transition:
    """Append one transition to the alert's trail (numbered per alert)."""
    step = Transition(alert.alert_id, alert.transitions_seq, at,
                      None if opening else (from_state or alert.state), to_state, actor, note)
    alert.transitions_seq += 1
    return step


def _touch(alert: Alert, now: datetime) -> None:
    alert.version += 1
    if now > alert.updated_at:
        alert.updated_at = now


def opened(alert: Alert, actor: str, note: str | None = None) -> tuple[Transition, ...]:
    """The transition of a new alert (from nothing to open)."""
    return (record(alert, alert.opened_at, AlertState.OPEN, actor, note, opening=True),)


def acknowledge(alert: Alert, actor: str, now: datetime, note: str | None = None) -> tuple[Transition, ...]:
    check(alert, AlertState.ACKNOWLEDGED)
    step = record(alert, now, AlertState.ACKNOWLEDGED, actor, note)
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by = actor
    _touch(alert, now)
    return (step,)


def resolve(alert: Alert, actor: str, now: datetime, note: str | None = None) -> tuple[Transition, ...]:
    check(alert, AlertState.RESOLVED)
    steps: list[Transition] = []
    if alert.state is AlertState.OPEN:
        steps.append(record(alert, now, AlertState.ACKNOWLEDGED, actor, IMPLICIT_ACK_NOTE))
        alert.state = AlertState.ACKNOWLEDGED
        alert.acknowledged_at = now
        alert.acknowledged_by = actor
    steps.append(record(alert, now, AlertState.RESOLVED, actor, note))
    alert.state = AlertState.RESOLVED
    alert.resolved_at = now
    alert.resolved_by = actor
    alert.closed_at = now
    if note is not None:
        alert.note = note
    _touch(alert, now)
    return tuple(steps)


def cancel(alert: Alert, actor: str, now: datetime, note: str | None = None) -> tuple[Transition, ...]:
    check(alert, AlertState.CANCELLED)
    step = record(alert, now, AlertState.CANCELLED, actor, note)
    alert.state = AlertState.CANCELLED
    alert.closed_at = now
    if note is not None and alert.note is None:
        alert.note = note
    _touch(alert, now)
    return (step,)


def escalate(alert: Alert, now: datetime, team: str | None) -> tuple[Transition, ...]:
    """One escalation step: to `team` (added to the alert's teams), or a reminder at the
    end of the chain (`team` None). Either way `escalation_level` goes up by one."""
    alert.escalation_level += 1
    alert.escalated_at = now
    if team is not None and team not in alert.teams:
        alert.teams = (*alert.teams, team)
        note = f"escalated to {team} (level {alert.escalation_level})"
    else:
        note = f"reminder to {', '.join(alert.teams)} (level {alert.escalation_level})"
    step = record(alert, now, alert.state, "system", note)
    _touch(alert, now)
    return (step,)


__all__ = ["ALLOWED", "IMPLICIT_ACK_NOTE", "acknowledge", "allowed", "cancel", "check", "escalate",
           "opened", "record", "resolve"]
