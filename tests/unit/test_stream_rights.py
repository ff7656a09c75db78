"""How a live stream ends when its user's rights change (dashboard/stream_rights.py
`verdict`): no I/O."""

from __future__ import annotations

from dashboard.authz import Principal
from dashboard.stream_rights import RIGHTS_CHANGED, SIGNED_OUT, verdict
from trygg.contract import Role

EAST = Principal("kari", Role.STAFF, frozenset({"east"}), frozenset(), 2_000_000_000)


def test_the_same_rights_go_on_whatever_the_expiry() -> None:
    assert verdict(EAST, Principal("kari", Role.STAFF, frozenset({"east"}), frozenset(), 1)) is None


def test_no_one_behind_the_token_is_expired() -> None:
    assert verdict(EAST, None) == ("expired", SIGNED_OUT)


def test_other_teams_role_or_residents_is_a_reset() -> None:
    for now in (Principal("kari", Role.STAFF, frozenset({"west"}), frozenset(), 0),
                Principal("kari", Role.STAFF, frozenset({"east", "west"}), frozenset(), 0),
                Principal("kari", Role.OPERATOR, frozenset({"east"}), frozenset(), 0),
                Principal("kari", Role.STAFF, frozenset({"east"}), frozenset({"r-1"}), 0)):
        assert verdict(EAST, now) == ("reset", RIGHTS_CHANGED)
