"""Event validation as a device integrator would meet it: every refusal names its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from trygg.contract import (
    EventType,
    InvalidMessage,
    Reason,
    parse_event,
    parse_status,
    parse_timestamp,
    parse_topic,
)

NOW = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


def payload(**fields: object) -> bytes:
    doc: dict[str, object] = {"id": "e-1", "ts": "2026-11-22T14:03:07.120+01:00",
                              "type": "fall.detected", "data": {"confidence": 0.93}}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def reason_of(raw: bytes) -> Reason:
    with pytest.raises(InvalidMessage) as info:
        parse_event("d-1", raw, NOW)
    return info.value.reason


def test_the_design_example_is_accepted() -> None:
    ev = parse_event("d-17-fall", payload(), NOW)
    assert ev.type is EventType.FALL_DETECTED
    assert ev.ts == datetime(2026, 11, 22, 13, 3, 7, 120000, tzinfo=UTC)
    assert ev.data == {"confidence": 0.93}
    assert ev.ref()["event_id"] == "e-1"


def test_data_may_be_omitted_when_empty() -> None:
    raw = json.dumps({"id": "e-2", "ts": "2026-11-22T13:00:00Z", "type": "alarm.button"})
    assert parse_event("d-1", raw.encode(), NOW).data == {}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", Reason.BAD_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b"\xff\xfe", Reason.NOT_UTF8),
        (b'{"id": "' + b"x" * 17000 + b'"}', Reason.TOO_LARGE),
        (payload(id=None), Reason.BAD_FIELD),
        (payload(id=""), Reason.BAD_FIELD),
        (payload(id="x" * 65), Reason.BAD_FIELD),
        (payload(type="fall"), Reason.UNKNOWN_TYPE),
        (payload(type=None), Reason.BAD_FIELD),
        (payload(ts=None), Reason.BAD_TIME),
        (payload(ts="yesterday"), Reason.BAD_TIME),
        (payload(ts="2026-11-22T14:03:07"), Reason.BAD_TIME),
        (payload(ts="2026-11-24T14:03:07Z"), Reason.BAD_TIME),
        (payload(ts="2026-10-01T14:03:07Z"), Reason.BAD_TIME),
        (payload(data={"confidence": 1.5}), Reason.BAD_FIELD),
        (payload(data={"confidence": "high"}), Reason.BAD_FIELD),
        (payload(data=[1]), Reason.BAD_FIELD),
        (payload(type="alarm.auto", data={"source": "kitchen"}), Reason.BAD_FIELD),
        (payload(type="location", data={"lat": 91, "lon": 10, "accuracy_m": 5}), Reason.BAD_FIELD),
        (payload(type="location", data={"lat": 59, "lon": 10}), Reason.BAD_FIELD),
        (payload(type="battery.low", data={}), Reason.BAD_FIELD),
        (payload(type="heartbeat", data={"battery_pct": 101}), Reason.BAD_FIELD),
        (payload(type="motion", data={"room": 7}), Reason.BAD_FIELD),
        (payload(data={"note": "nul \u0000 inside"}), Reason.BAD_FIELD),
    ],
)
def test_bad_events_are_refused_with_their_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) is reason


def test_time_limits_are_24_hours_ahead_and_30_days_back() -> None:
    ahead = (NOW + timedelta(hours=23, minutes=59)).isoformat()
    back = (NOW - timedelta(days=29, hours=23)).isoformat()
    assert parse_event("d", payload(ts=ahead), NOW).ts > NOW
    assert parse_event("d", payload(ts=back), NOW).ts < NOW


@pytest.mark.parametrize(
    "topic",
    ["trygg/v1/devices/d 1/events", "trygg/v1/devices/d1/other", "trygg/v1/devices/d1",
     "other/v1/devices/d1/events", "trygg/v1/devices/" + "x" * 65 + "/events"],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_topic(topic, "trygg/v1")
    assert info.value.reason is Reason.BAD_TOPIC


def test_topic_gives_device_and_channel() -> None:
    t = parse_topic("trygg/v1/devices/d-17.fall_1/status", "trygg/v1")
    assert (t.device_id, t.channel) == ("d-17.fall_1", "status")


def test_status_is_online_or_offline() -> None:
    assert parse_status(b"online") is True
    assert parse_status(b"offline") is False
    with pytest.raises(InvalidMessage):
        parse_status(b"maybe")


def test_z_and_offsets_are_the_same_instant() -> None:
    assert parse_timestamp("2026-11-22T13:00:00Z") == parse_timestamp("2026-11-22T14:00:00+01:00")
