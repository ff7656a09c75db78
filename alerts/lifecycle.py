"""The lifecycle of one alert (docs/contract.md#4-rules-and-alerts): pure functions, no I/O, `now` passed in.

```
open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
  │ ╲                      │
  │  ╲──resolve (implicit acknowledgement)──▶ resolved
  └──cancel──▶ cancelled ◀─┘ cancel (not with only_if_open)
```

Decisions where docs/contract.md is silent:

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

Each function takes the alert as it is and returns it as it is after the step (with
`version` and `updated_at` bumped) and the transitions it recorded.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from alerts.errors import IllegalTransition
from alerts.model import SYSTEM, Alert, Transition
from trygg.contract import AlertState

ALLOWED: Final[dict[AlertState, frozenset[AlertState]]] = {
    AlertState.OPEN: frozenset({AlertState.ACKNOWLEDGED, AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.ACKNOWLEDGED: frozenset({AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.RESOLVED: frozenset(),
    AlertState.CANCELLED: frozenset(),
}

IMPLICIT_ACK_NOTE: Final = "acknowledged by resolving"

Step = tuple[Alert, tuple[Transition, ...]]


def allowed(from_state: AlertState, to_state: AlertState) -> bool:
    return to_state in ALLOWED[from_state]


def check(alert: Alert, to_state: AlertState) -> None:
    if not allowed(alert.state, to_state):
        raise IllegalTransition(alert.alert_id, alert.state, to_state)


def _after(alert: Alert, now: datetime, steps: list[Transition], **changes: Any) -> Step:
    """The alert after `steps` (numbered from its `transition_count`), one version on."""
    return replace(alert, **changes, version=alert.version + 1, updated_at=max(alert.updated_at, now),
                   transition_count=alert.transition_count + len(steps)), tuple(steps)


def opened(alert: Alert, actor: str, note: str | None = None) -> Step:
    """A new alert with the transition that opened it (from nothing to open)."""
    step = Transition(alert.alert_id, alert.transition_count, alert.opened_at, None, AlertState.OPEN, actor, note)
    return replace(alert, transition_count=alert.transition_count + 1), (step,)


def acknowledge(alert: Alert, actor: str, now: datetime, note: str | None = None) -> Step:
    check(alert, AlertState.ACKNOWLEDGED)
    step = Transition(alert.alert_id, alert.transition_count, now, alert.state, AlertState.ACKNOWLEDGED, actor, note)
    return _after(alert, now, [step], state=AlertState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=actor)


def resolve(alert: Alert, actor: str, now: datetime, note: str | None = None) -> Step:
    check(alert, AlertState.RESOLVED)
    steps: list[Transition] = []
    changes: dict[str, Any] = {}
    seq, from_state = alert.transition_count, alert.state
    if from_state is AlertState.OPEN:
        steps.append(Transition(alert.alert_id, seq, now, from_state, AlertState.ACKNOWLEDGED, actor,
                                IMPLICIT_ACK_NOTE))
        seq, from_state = seq + 1, AlertState.ACKNOWLEDGED
        changes.update(acknowledged_at=now, acknowledged_by=actor)
    steps.append(Transition(alert.alert_id, seq, now, from_state, AlertState.RESOLVED, actor, note))
    if note is not None:
        changes["note"] = note
    return _after(alert, now, steps, state=AlertState.RESOLVED, resolved_at=now, resolved_by=actor,
                  closed_at=now, **changes)


def cancel(alert: Alert, actor: str, now: datetime, note: str | None = None) -> Step:
    check(alert, AlertState.CANCELLED)
    step = Transition(alert.alert_id, alert.transition_count, now, alert.state, AlertState.CANCELLED, actor, note)
    kept_note = note if note is not None and alert.note is None else alert.note
    return _after(alert, now, [step], state=AlertState.CANCELLED, closed_at=now, note=kept_note)


def escalate(alert: Alert, now: datetime, team: str | None) -> Step:
    """One escalation step: to `team` (added to the alert's teams), or a reminder at the
    end of the chain (`team` None). Either way `escalation_level` goes up by one."""
    level = alert.escalation_level + 1
    teams = alert.teams
    if team is not None and team not in teams:
        teams = (*teams, team)
        note = f"escalated to {team} (level {level})"
    else:
        note = f"reminder to {', '.join(teams)} (level {level})"
    step = Transition(alert.alert_id, alert.transition_count, now, alert.state, alert.state, SYSTEM, note)
    return _after(alert, now, [step], escalation_level=level, escalated_at=now, teams=teams)


__all__ = ["ALLOWED", "IMPLICIT_ACK_NOTE", "Step", "acknowledge", "allowed", "cancel", "check", "escalate",
           "opened", "resolve"]
