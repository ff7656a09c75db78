"""Escalation timers and the chain of teams (docs/contract.md#4-rules-and-alerts).

An open alert escalates when nobody acknowledges it within its priority's timeout
(critical 30 s, high 60 s, medium 5 min, low never; `Timeouts` from Settings). Each step
publishes it to the next team of the chain (`Team.escalate_to`: east → alarm-centre → …)
with `escalation_level` + 1; at the end of the chain the step is a reminder to every team
reached so far. The next step is due one timeout after the previous one.

`EscalationTimers` is one heap for all alerts, like a scheduler: `arm` replaces an
alert's deadline, `disarm` forgets it (entries are invalidated lazily), `next_deadline`
says when to wake up and `pop_due` hands back the alerts whose time has come.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from trygg.contract import Priority
from trygg.registry import Team


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds until an unacknowledged alert escalates, per priority; None = never."""

    critical_s: float | None = 30.0
    high_s: float | None = 60.0
    medium_s: float | None = 300.0
    low_s: float | None = None

    def of(self, priority: Priority) -> timedelta | None:
        seconds = {
            Priority.CRITICAL: self.critical_s,
            Priority.HIGH: self.high_s,
            Priority.MEDIUM: self.medium_s,
            Priority.LOW: self.low_s,
        }[priority]
        return None if seconds is None else timedelta(seconds=seconds)


def next_team(teams: Mapping[str, Team], reached: tuple[str, ...]) -> str | None:
    """The team an alert escalates to from the last team it reached; None at the end of
    the chain (or if the chain loops back to a team already reached)."""
    if not reached:
        return None
    team = teams.get(reached[-1])
    if team is None or team.escalate_to is None or team.escalate_to in reached:
        return None
    return team.escalate_to


class EscalationTimers:
    """Deadlines of many alerts in one heap."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        self._armed: dict[str, tuple[datetime, int]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._armed

    def deadline(self, alert_id: str) -> datetime | None:
        entry = self._armed.get(alert_id)
        return None if entry is None else entry[0]

    def arm(self, alert_id: str, deadline: datetime) -> None:
        seq = next(self._seq)
        self._armed[alert_id] = (deadline, seq)
        heapq.heappush(self._heap, (deadline, seq, alert_id))
        if len(self._heap) > 2 * len(self._armed) + 64:
            self._compact()

    def disarm(self, alert_id: str) -> None:
        self._armed.pop(alert_id, None)

    def _live(self, entry: tuple[datetime, int, str]) -> bool:
        armed = self._armed.get(entry[2])
        return armed is not None and armed[1] == entry[1]

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live(e)]
        heapq.heapify(self._heap)

    def next_deadline(self) -> datetime | None:
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[str]:
        """The alerts whose deadline is at or before `now`, earliest first; disarmed."""
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if self._live(entry):
                del self._armed[entry[2]]
                due.append(entry[2])
        return due


__all__ = ["EscalationTimers", "Timeouts", "next_team"]
