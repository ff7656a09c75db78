"""Who may do what, in one place (docs/contract.md#6-http-api-and-pages; docs/api.md "Who may call what").

Two kinds of refusal:

- A role that may never use a route gets **403** (`require`), e.g. a relative asking for
  the alert list, or anyone but a researcher asking for research data.
- An object the caller may not see answers **404**, exactly like one that does not exist:
  staff of team east asking for an alert of team west, a relative of A asking for B.
  For resident objects (`/api/residents/{id}/…`) this holds for every role, even one that
  may never see any resident: the answer must not tell whether the resident exists.

Everything here is pure: the routes fetch the objects and call these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from dashboard.errors import Forbidden, NotFound
from storage.residents_store import ResidentRow
from trygg.alert import Alert
from trygg.contract import Role


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as stored in trygg.users at this request."""

    username: str
    role: Role
    teams: frozenset[str] = frozenset()
    residents: frozenset[str] = frozenset()
    #: when the token or cookie it came with expires (Unix seconds)
    expires: int = 0


class Action(StrEnum):
    ALERTS_LIST = "alerts.list"
    ALERTS_STREAM = "alerts.stream"
    ALERTS_CHANGE = "alerts.change"  # acknowledge, resolve
    RESIDENTS_LIST = "residents.list"
    RESIDENT_EVENTS = "resident.events"
    RESIDENT_STATUS = "resident.status"
    RESIDENT_CARD = "resident.card"  # address, access, contacts, devices' health
    TEAMS_LIST = "teams.list"
    DEVICE_HEALTH = "devices.health"  # a team's devices that need a visit
    SHIFT = "shift"  # closed alerts, the shift report and its CSV
    RESEARCH = "research"
    REGISTRY = "registry"
    ADMIN = "admin"  # the admin page's edits: residents, devices, users, consents
    AUDIT = "audit"


ROLES: Final[dict[Action, frozenset[Role]]] = {
    Action.ALERTS_LIST: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.ALERTS_STREAM: frozenset({Role.STAFF, Role.OPERATOR}),
    Action.ALERTS_CHANGE: frozenset({Role.STAFF, Role.OPERATOR}),
    Action.RESIDENTS_LIST: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.RESIDENT_EVENTS: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.RESIDENT_STATUS: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN, Role.RELATIVE}),
    Action.RESIDENT_CARD: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.TEAMS_LIST: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.DEVICE_HEALTH: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.SHIFT: frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN}),
    Action.RESEARCH: frozenset({Role.RESEARCHER}),
    Action.REGISTRY: frozenset({Role.ADMIN}),
    Action.ADMIN: frozenset({Role.ADMIN}),
    Action.AUDIT: frozenset({Role.ADMIN}),
}

#: Actions on one resident: refusals are 404, never 403.
RESIDENT_ACTIONS: Final = frozenset({Action.RESIDENT_EVENTS, Action.RESIDENT_STATUS, Action.RESIDENT_CARD})

#: Roles that see every team's alerts and residents.
ALL_TEAMS: Final = frozenset({Role.OPERATOR, Role.ADMIN})


def require(who: Principal, action: Action) -> None:
    """403 if `who`'s role may never do `action` (404 for actions on a resident)."""
    if who.role not in ROLES[action]:
        if action in RESIDENT_ACTIONS:
            raise NotFound()
        raise Forbidden(f"the role {who.role.value} may not use this route")


def team_scope(who: Principal, team: str | None = None) -> frozenset[str] | None:
    """The teams whose alerts and residents `who` sees (None = all), narrowed to `team`."""
    if who.role in ALL_TEAMS:
        return None if team is None else frozenset({team})
    mine = who.teams if who.role is Role.STAFF else frozenset()
    return mine if team is None else mine & {team}


def alert_teams(alert: Alert) -> set[str]:
    """Every team an alert was published to (its own team, and escalation teams)."""
    return {alert.team_id, *alert.teams}


def may_see_alert(who: Principal, alert: Alert) -> bool:
    scope = team_scope(who)
    return scope is None or bool(alert_teams(alert) & scope)


def check_alert(who: Principal, alert: Alert | None) -> Alert:
    """The alert if `who` may see it, else 404 as if it did not exist."""
    if alert is None or not may_see_alert(who, alert):
        raise NotFound()
    return alert


class View(StrEnum):
    """How much of a resident a caller sees."""

    CARE = "care"  # staff, operator, admin: everything the registry and timeline hold
    RELATIVE = "relative"  # the calm status only


def resident_view(who: Principal, resident: ResidentRow | None, action: Action) -> View:
    """What `who` may see of `resident` for `action`; 404 when nothing (or no resident)."""
    require(who, action)
    if resident is None:
        raise NotFound()
    if who.role in ALL_TEAMS:
        return View.CARE
    if who.role is Role.STAFF and resident.team_id in who.teams:
        return View.CARE
    if (action is Action.RESIDENT_STATUS and who.role is Role.RELATIVE
            and resident.id in who.residents and resident.consent("relatives_status")):
        return View.RELATIVE
    raise NotFound()


def may_see_location(view: View, resident: ResidentRow, now: datetime) -> bool:
    """Positions need a valid location basis (docs/contract.md#7-privacy-and-lawful-care); relatives also the
    `relatives_location` consent."""
    if not resident.location_basis_valid(now):
        return False
    return view is View.CARE or resident.consent("relatives_location")


def residents_shown(alerts: Iterable[Alert]) -> list[str]:
    """The distinct residents of some alerts, in order of first appearance (one audit row each)."""
    return list(dict.fromkeys(alert.resident_id for alert in alerts))


__all__ = [
    "ALL_TEAMS",
    "ROLES",
    "Action",
    "Principal",
    "View",
    "alert_teams",
    "check_alert",
    "may_see_alert",
    "may_see_location",
    "require",
    "resident_view",
    "residents_shown",
    "team_scope",
]
