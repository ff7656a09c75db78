"""Past alerts as `trygg.alerts` keeps them (Trygg never removes them: docs/storage.md
"Retention"), for three readers:

- `recent_alerts`: one resident's recent alerts for the relatives' history. Only what a
  relative may read is selected: kind, state and times. Devices, events, positions, staff
  names and notes stay in trygg.alerts.
- `closed_alerts`: closed (resolved or cancelled) alerts, newest `closed_at` first, one
  page at a time, for `GET /api/alerts?state=resolved|cancelled|closed` (the alerts stage
  keeps only unresolved alerts at hand).
- `shift_alerts` and `staff_notes`: what happened in a shift, with the resident's name,
  who closed each alert and the notes staff wrote, for the shift page (docs/shift.md).

Team scoping is the caller's: `teams` is the set of teams whose alerts the caller sees, or
None for all. An alert belongs to every team it was published to (`teams`, and the
resident's `team_id`), as `dashboard.authz.alert_teams` says.

With years of alerts a page still costs a page (docs/shift.md "How fast" has the
figures): see `closed_alerts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from trygg.alert import RECORD_FIELDS, Alert

#: Closed states, as stored.
CLOSED_STATES: Final = ("resolved", "cancelled")

#: The teams an alert reached, as one array (the expression the 0017 index holds).
_REACHED: Final = "array_append(a.teams, a.team_id)"

_COLUMNS: Final = ", ".join(f"a.{c}" for c in RECORD_FIELDS)


async def recent_alerts(conn: psycopg.AsyncConnection[Any], resident_id: str, since: datetime,
                        limit: int) -> list[dict[str, Any]]:
    """Alerts opened or closed since `since`, and any still unresolved, newest first:
    `alert_id`, `kind`, `state`, `opened_at`, `closed_at`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT alert_id, kind, state, opened_at, closed_at FROM trygg.alerts"
            " WHERE resident_id = %(rid)s"
            " AND (opened_at >= %(since)s OR closed_at >= %(since)s OR state IN ('open', 'acknowledged'))"
            " ORDER BY opened_at DESC, alert_id LIMIT %(limit)s",
            {"rid": resident_id, "since": since, "limit": limit},
        )
        return list(await cur.fetchall())


#: Where a page of closed alerts continues: after the alert closed at this time with this id.
Position = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class ClosedPage:
    alerts: list[Alert]
    #: where the next page begins; None when this page is the last
    next_before: Position | None


def _team_clause(teams: frozenset[str] | None, params: dict[str, Any]) -> str:
    if teams is None:
        return ""
    params["teams"] = sorted(teams)
    return f" AND {_REACHED} && %(teams)s::text[]"


async def closed_alerts(conn: psycopg.AsyncConnection[Any], *, teams: frozenset[str] | None,
                        states: Sequence[str] = CLOSED_STATES, since: datetime | None = None,
                        until: datetime | None = None, resident: str | None = None,
                        before: Position | None = None, limit: int = 50) -> ClosedPage:
    """Closed alerts in `states` that reached one of `teams` (None: all), closed in
    [since, until), of `resident` if given, newest `closed_at` first (then by id), at most
    `limit`, starting after `before`.

    Three ways to the rows, each bounded by the page, not by the history: a resident's
    alerts by the resident's index; a team's by trygg.alert_reach (0017), one index range
    per team; every team's by walking alerts_closed_idx."""
    params: dict[str, Any] = {"states": list(states), "limit": limit + 1}
    where = ["{t}.closed_at IS NOT NULL", "{t}.state = ANY(%(states)s)"]
    if since is not None:
        where.append("{t}.closed_at >= %(since)s")
        params["since"] = since
    if until is not None:
        where.append("{t}.closed_at < %(until)s")
        params["until"] = until
    if before is not None:
        where.append("({t}.closed_at, {t}.alert_id) < (%(before_at)s, %(before_id)s)")
        params["before_at"], params["before_id"] = before
    order = " ORDER BY {t}.closed_at DESC, {t}.alert_id DESC LIMIT %(limit)s"
    if resident is not None or teams is None:
        if resident is not None:
            where.append("a.resident_id = %(resident)s")
            params["resident"] = resident
        query = (f"SELECT {_COLUMNS} FROM trygg.alerts a WHERE " + " AND ".join(where).format(t="a")
                 + _team_clause(teams, params) + order.format(t="a"))
    else:
        params["teams"] = sorted(teams)
        query = (f"SELECT {_COLUMNS} FROM trygg.alerts a JOIN ("
                 "SELECT DISTINCT p.alert_id FROM unnest(%(teams)s::text[]) AS s(team_id)"
                 " CROSS JOIN LATERAL (SELECT r.alert_id FROM trygg.alert_reach r WHERE r.team_id = s.team_id AND "
                 + " AND ".join(where).format(t="r") + order.format(t="r") + ") p"
                 ") page ON page.alert_id = a.alert_id" + order.format(t="a"))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        rows = await cur.fetchall()
    alerts = [Alert.from_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = alerts[-1] if alerts else None
    nxt = (last.closed_at, last.alert_id) if more and last is not None and last.closed_at is not None else None
    return ClosedPage(alerts, nxt)


@dataclass(frozen=True, slots=True)
class Note:
    """A note a person wrote when taking or resolving an alert."""

    at: datetime
    by: str
    text: str


@dataclass(frozen=True, slots=True)
class ShiftRow:
    """An alert of a shift, with who closed it (`closed_by`: the staff member who resolved
    it, or the actor of the cancellation, "system" or "resident") and the resident's name
    (None for a resident no longer in the registry)."""

    alert: Alert
    resident_name: str | None
    closed_by: str | None
    notes: tuple[Note, ...] = ()


async def shift_alerts(conn: psycopg.AsyncConnection[Any], *, teams: frozenset[str] | None,
                       since: datetime, limit: int) -> tuple[list[ShiftRow], bool]:
    """The alerts that reached one of `teams` (None: all) and were opened or closed at or
    after `since`, and those still unresolved, newest opening first, with their notes; at
    most `limit` (the flag says whether more were left out)."""
    params: dict[str, Any] = {"since": since, "limit": limit + 1}
    where = ("(a.opened_at >= %(since)s OR a.closed_at >= %(since)s OR a.state IN ('open', 'acknowledged'))"
             + _team_clause(teams, params))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS}, r.name AS resident_name,"
            " coalesce(a.resolved_by, c.actor) AS closed_by"
            " FROM trygg.alerts a"
            " LEFT JOIN trygg.residents r ON r.id = a.resident_id"
            " LEFT JOIN LATERAL (SELECT t.actor FROM trygg.alert_transitions t WHERE t.alert_id = a.alert_id"
            "   AND t.to_state IN ('resolved', 'cancelled') ORDER BY t.seq DESC LIMIT 1) c ON true"
            f" WHERE {where}"
            " ORDER BY a.opened_at DESC, a.alert_id DESC LIMIT %(limit)s",
            params,
        )
        rows = await cur.fetchall()
    truncated = len(rows) > limit
    found = [(Alert.from_record(row), row["resident_name"], row["closed_by"]) for row in rows[:limit]]
    notes = await staff_notes(conn, [alert for alert, _, _ in found])
    return [ShiftRow(alert, name, closed_by, notes.get(alert.alert_id, ()))
            for alert, name, closed_by in found], truncated


async def staff_notes(conn: psycopg.AsyncConnection[Any], alerts: Sequence[Alert]) -> dict[str, tuple[Note, ...]]:
    """The notes written when taking or resolving each of `alerts`, oldest first.

    Escalation steps (a transition from a state to itself) and cancellations carry notes
    of the system, not of a person, and are left out; so is the acknowledgement recorded
    together with resolving straight from open (alerts/lifecycle.py: the same instant
    as `resolved_at`), whose note only says so."""
    if not alerts:
        return {}
    resolved_at = {a.alert_id: a.resolved_at for a in alerts}
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT alert_id, at, actor, to_state, note FROM trygg.alert_transitions"
            " WHERE alert_id = ANY(%s) AND note IS NOT NULL AND to_state IN ('acknowledged', 'resolved')"
            " AND from_state IS DISTINCT FROM to_state ORDER BY alert_id, seq",
            (list(resolved_at),),
        )
        rows = await cur.fetchall()
    notes: dict[str, list[Note]] = {}
    for alert_id, at, actor, to_state, note in rows:
        if to_state == "acknowledged" and at == resolved_at.get(alert_id):
            continue
        notes.setdefault(alert_id, []).append(Note(at, actor, note))
    return {alert_id: tuple(found) for alert_id, found in notes.items()}


__all__ = ["CLOSED_STATES", "ClosedPage", "Note", "Position", "ShiftRow", "closed_alerts", "recent_alerts",
           "shift_alerts", "staff_notes"]
