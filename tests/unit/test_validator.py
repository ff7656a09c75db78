"""The gateway's validator (gateway/validate.py) under odd input: it returns a result or
raises InvalidMessage, nothing else, and a position it cannot clear is never kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.validate import Validator
from tests.helpers import event, small_registry
from trygg.contract import InvalidMessage, Reason

PREFIX = "trygg/v1"
FIX: dict[str, object] = {"lat": 59.91, "lon": 10.75, "accuracy_m": 10}


def test_a_position_is_discarded_when_the_emergency_check_fails() -> None:
    """d-2-phone's resident has no location basis: only an open alarm makes the position
    usable. A failing check must neither stop the gateway nor let the position through
    (as an event or as a dead letter holding it)."""
    class Broken:
        def emergency_open(self, resident_id: str) -> bool:
            raise RuntimeError("alerts stage not ready")

    validator = Validator(small_registry(), PREFIX, emergencies=Broken())
    now = datetime.now(UTC)
    assert validator.accept(f"{PREFIX}/devices/d-2-phone/events", event("p-1", "location", FIX), now) is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (b"trygg/v1/devices/\xff/events", b"{}", Reason.BAD_TOPIC),
        (f"{PREFIX}/devices/d-1-alarm/status", b"online" * 100_000, Reason.BAD_STATUS),
        (f"{PREFIX}/devices/d-1-alarm/events", b'{"id": "e", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         Reason.TOO_DEEP),
    ],
)
def test_odd_messages_are_refused_with_their_reason(topic: str | bytes, payload: bytes, reason: Reason) -> None:
    with pytest.raises(InvalidMessage) as info:
        Validator(small_registry(), PREFIX).accept(topic, payload, datetime.now(UTC))
    assert info.value.reason is reason
