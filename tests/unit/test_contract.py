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
        (payload(data={"nul \u0000 in a key": 1}), Reason.BAD_FIELD),
    ],
)
def test_bad_events_are_refused_with_their_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) is reason


def text(data: str = "{}", extra: str = "", event_id: str = "e-1", kind: str = "heartbeat",
         ts: str = "2026-11-22T14:03:07.120+01:00") -> bytes:
    """An event written by hand: JSON that `json.dumps` never writes (lone surrogate
    escapes, NaN, 1e400)."""
    return f'{{"id": "{event_id}", "ts": "{ts}", "type": "{kind}", "data": {data}{extra}}}'.encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # nesting: at most 8 levels, the event itself being the first
        (text("[" * 3000 + "]" * 3000), Reason.TOO_DEEP),  # json.loads raises RecursionError
        (b"[" * 3000 + b"]" * 3000, Reason.TOO_DEEP),
        (text('{"a":' * 8 + "1" + "}" * 8), Reason.TOO_DEEP),  # levels 2..9
        (text('{"a": [[[[[[[1]]]]]]]}'), Reason.TOO_DEEP),
        # numbers: finite, within ±2^53, at most 64 characters, exponent within ±300
        (text('{"x": NaN}'), Reason.BAD_NUMBER),
        (text('{"x": Infinity}'), Reason.BAD_NUMBER),
        (text(extra=', "x": -Infinity'), Reason.BAD_NUMBER),
        (text('{"x": 1e400}'), Reason.BAD_NUMBER),
        (text('{"x": -1.7976931348623157e308}'), Reason.BAD_NUMBER),
        (text('{"x": 0e-99999}'), Reason.BAD_NUMBER),
        (text('{"x": 1e-301}'), Reason.BAD_NUMBER),
        (text('{"x": 9007199254740993}'), Reason.BAD_NUMBER),
        (text('{"x": -9007199254740993}'), Reason.BAD_NUMBER),
        (text('{"x": 9007199254740994.0}'), Reason.BAD_NUMBER),
        (text('{"x": ' + "7" * 5000 + "}"), Reason.BAD_NUMBER),
        (text('{"x": 0.' + "1" * 70 + "}"), Reason.BAD_NUMBER),
        (text('{"battery_pct": 1e400}'), Reason.BAD_NUMBER),
        # text: no lone UTF-16 surrogate anywhere, keys included
        (text(event_id="e-\\ud800"), Reason.BAD_TEXT),
        (text(kind="heartbeat\\udfff"), Reason.BAD_TEXT),
        (text('{"\\udc00": 1}'), Reason.BAD_TEXT),
        (text('{"door": "\\ud800"}', kind="door.opened"), Reason.BAD_TEXT),
        (text('{"a": [{"b": ["\\uDBFF"]}]}'), Reason.BAD_TEXT),
        (text('{"a": "\\udc00\\ud800"}'), Reason.BAD_TEXT),  # a pair in the wrong order
        (text(extra=', "\\ud800": 1'), Reason.BAD_TEXT),
        # UTC offsets: whole minutes within ±15:59 (PostgreSQL 15 refuses +16:00)
        (text(ts="2026-11-23T09:00:00+20:00"), Reason.BAD_TIME),
        (text(ts="2026-11-22T03:00:00-16:00"), Reason.BAD_TIME),
        (text(ts="2026-11-22T14:03:07+01:00:30"), Reason.BAD_TIME),
    ],
)
def test_payloads_outside_the_bounds_are_refused_with_their_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) is reason


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (text('{"a": {"b": {"c": {"d": {"e": {"f": [1]}}}}}}'),  # [1] is level 8
         {"a": {"b": {"c": {"d": {"e": {"f": [1]}}}}}}),
        (text('{"x": 9007199254740992, "y": -9007199254740992}'), {"x": 2**53, "y": -(2**53)}),
        (text('{"x": 1e-300, "y": 1.5E+15, "z": -0.0}'), {"x": 1e-300, "y": 1.5e15, "z": 0.0}),
        (text('{"x": "\\ud83d\\ude00 \\u00e6"}'), {"x": "\U0001f600 æ"}),  # a proper pair is one character
        (text('{"x": "\\\\ud800 \\\\u0000"}'), {"x": "\\ud800 \\u0000"}),  # a backslash, then text
        (text('{"[[[[[[[[[": "]]]]]]]]]]"}'), {"[[[[[[[[[": "]]]]]]]]]]"}),
    ],
)
def test_payloads_within_the_bounds_are_accepted(raw: bytes, data: dict[str, object]) -> None:
    assert parse_event("d-1", raw, NOW).data == data


@pytest.mark.parametrize("offset", ["+15:59", "-15:59", "+14:00", "-12:00", "+05:45", "Z"])
def test_every_utc_offset_postgresql_takes_is_accepted(offset: str) -> None:
    ts = parse_timestamp(f"2026-11-22T13:00:00{offset}")
    assert ts.utcoffset() is not None


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
