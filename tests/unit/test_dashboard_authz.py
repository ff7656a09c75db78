"""The rules of dashboard/authz.py: 403 for a role that never may, 404 for an object
that is not the caller's — and always 404 for resident objects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dashboard.authz import Action, Principal, View, check_alert, may_see_location, require, resident_view, team_scope
from dashboard.errors import Forbidden, NotFound
from storage.residents_store import ResidentRow
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Priority, Role

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
KARI = ResidentRow("r-17", "east", "Europe/Oslo", {"relatives_status": True, "relatives_location": False},
                   {"kind": "vedtak", "valid_until": "2027-06-30"})

ADMIN = Principal("a", Role.ADMIN)
OPERATOR = Principal("o", Role.OPERATOR)
EAST = Principal("s", Role.STAFF, teams=frozenset({"east"}))
WEST = Principal("w", Role.STAFF, teams=frozenset({"west"}))
ANNE = Principal("anne", Role.RELATIVE, residents=frozenset({"r-17"}))
OTHER = Principal("per", Role.RELATIVE, residents=frozenset({"r-18"}))
RESEARCHER = Principal("r", Role.RESEARCHER)


@pytest.mark.parametrize(("who", "action", "error"), [
    (ANNE, Action.ALERTS_LIST, Forbidden), (ADMIN, Action.ALERTS_STREAM, Forbidden),
    (ADMIN, Action.ALERTS_CHANGE, Forbidden), (RESEARCHER, Action.RESIDENTS_LIST, Forbidden),
    (EAST, Action.RESEARCH, Forbidden), (OPERATOR, Action.REGISTRY, Forbidden), (EAST, Action.AUDIT, Forbidden),
    (RESEARCHER, Action.RESIDENT_EVENTS, NotFound), (ANNE, Action.RESIDENT_EVENTS, NotFound),
    (RESEARCHER, Action.RESIDENT_STATUS, NotFound),
])
def test_roles_that_never_may(who: Principal, action: Action, error: type[Exception]) -> None:
    with pytest.raises(error):
        require(who, action)


@pytest.mark.parametrize(("who", "action", "view"), [
    (ADMIN, Action.RESIDENT_EVENTS, View.CARE), (OPERATOR, Action.RESIDENT_STATUS, View.CARE),
    (EAST, Action.RESIDENT_EVENTS, View.CARE), (ANNE, Action.RESIDENT_STATUS, View.RELATIVE),
    (WEST, Action.RESIDENT_STATUS, None), (OTHER, Action.RESIDENT_STATUS, None),
    (ANNE, Action.RESIDENT_EVENTS, None), (RESEARCHER, Action.RESIDENT_STATUS, None),
])
def test_resident_views(who: Principal, action: Action, view: View | None) -> None:
    if view is None:
        with pytest.raises(NotFound):
            resident_view(who, KARI, action)
    else:
        assert resident_view(who, KARI, action) is view
    with pytest.raises(NotFound):  # a resident that does not exist looks the same
        resident_view(who, None, action)


def test_a_relative_needs_the_status_consent() -> None:
    no_consent = ResidentRow("r-17", "east", "Europe/Oslo", {"relatives_status": False}, None)
    with pytest.raises(NotFound):
        resident_view(ANNE, no_consent, Action.RESIDENT_STATUS)


def test_locations_need_a_valid_basis_and_for_relatives_consent() -> None:
    assert may_see_location(View.CARE, KARI, NOW)
    assert not may_see_location(View.RELATIVE, KARI, NOW)
    expired = ResidentRow("r-17", "east", "Europe/Oslo", {"relatives_location": True},
                          {"kind": "consent", "valid_until": "2026-11-21"})
    assert not may_see_location(View.CARE, expired, NOW)
    open_ended = ResidentRow("r-17", "east", "Europe/Oslo", {"relatives_location": True}, {"kind": "consent"})
    assert may_see_location(View.RELATIVE, open_ended, NOW)
    assert not may_see_location(View.CARE, ResidentRow("r", "east", "UTC", {}, None), NOW)


def test_alerts_by_team_including_escalation_teams() -> None:
    alert = Alert(alert_id="a-1", resident_id="r-1", team_id="east", kind=AlertKind.FALL, priority=Priority.HIGH,
                  state=AlertState.OPEN, opened_at=NOW, updated_at=NOW, teams=("east", "alarm-centre"))
    centre = Principal("c", Role.STAFF, teams=frozenset({"alarm-centre"}))
    assert check_alert(EAST, alert) is alert
    assert check_alert(centre, alert) is alert
    assert check_alert(OPERATOR, alert) is alert
    with pytest.raises(NotFound):
        check_alert(WEST, alert)
    with pytest.raises(NotFound):
        check_alert(OPERATOR, None)


def test_team_scope() -> None:
    assert team_scope(OPERATOR) is None
    assert team_scope(ADMIN, "west") == {"west"}
    assert team_scope(EAST) == {"east"}
    assert team_scope(EAST, "west") == frozenset()
    assert team_scope(ANNE) == frozenset()
