"""The wire contract of docs/contract.md#3-mqtt-contract: topics, event types, device kinds, alert kinds.

Event validation is written by hand rather than with a model class: it runs once per
event on the ingest hot path, and every refusal must name a precise reason that ends up
in the dead-letter store.

A payload is bounded before and while it is parsed (docs/ingest.md, "Bounds"): its size,
its nesting depth, its numbers and its text, so that whatever passes is something
PostgreSQL stores and reads back unchanged. Anything any account may publish can reach
this code; a payload that got past these bounds once stopped the gateway for good
(issue 13: a 3,000-deep array made `json.loads` raise RecursionError).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_FUTURE: Final = timedelta(hours=24)
MAX_PAST: Final = timedelta(days=30)
#: levels of objects and arrays, the event object itself being level 1 (`data` is level 2)
MAX_DEPTH: Final = 8
#: every number lies within ±2^53: integers are exact in JavaScript (the dashboard) and
#: every other number reads back from PostgreSQL's numeric as the same double
MAX_NUMBER: Final = 2**53
#: a number other than an integer: at most this many characters, exponent within ±300
#: (PostgreSQL's numeric refuses `0e-99999` and `1e-20000`, which Python reads as 0.0)
MAX_NUMBER_TEXT: Final = 64
MAX_EXPONENT: Final = 300
#: UTC offsets PostgreSQL 15 accepts in a timestamptz: up to 15:59 either way (real time
#: zones span -12:00..+14:00); `+16:00` and beyond are refused there
MAX_OFFSET: Final = timedelta(hours=15, minutes=59)

_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class DeviceKind(StrEnum):
    ALARM_UNIT = "alarm_unit"
    AUTO_ALARM = "auto_alarm"
    FALL_SENSOR = "fall_sensor"
    SMOKE_DETECTOR = "smoke_detector"
    DOOR_SENSOR = "door_sensor"
    DOOR_LOCK = "door_lock"
    MOTION_SENSOR = "motion_sensor"
    GPS_TRACKER = "gps_tracker"
    PHONE = "phone"


class EventType(StrEnum):
    ALARM_BUTTON = "alarm.button"
    ALARM_AUTO = "alarm.auto"
    ALARM_CANCEL = "alarm.cancel"
    FALL_DETECTED = "fall.detected"
    SMOKE_DETECTED = "smoke.detected"
    SMOKE_CLEARED = "smoke.cleared"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    DOOR_UNLOCKED = "door.unlocked"
    DOOR_LOCKED = "door.locked"
    MOTION = "motion"
    LOCATION = "location"
    HEARTBEAT = "heartbeat"
    BATTERY_LOW = "battery.low"


class AlertKind(StrEnum):
    SMOKE = "smoke"
    ALARM = "alarm"
    FALL = "fall"
    WANDERING = "wandering"
    GEOFENCE_EXIT = "geofence_exit"
    DOOR_OPEN = "door_open"
    INACTIVITY = "inactivity"
    DEVICE_OFFLINE = "device_offline"
    BATTERY_LOW = "battery_low"


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    STAFF = "staff"
    RELATIVE = "relative"
    RESEARCHER = "researcher"


ANY_KIND: Final = frozenset(DeviceKind)

#: Which device kinds may send which event type (docs/contract.md#3-events, "source device").
SOURCE_KINDS: Final[dict[EventType, frozenset[DeviceKind]]] = {
    EventType.ALARM_BUTTON: frozenset({DeviceKind.ALARM_UNIT}),
    EventType.ALARM_AUTO: frozenset({DeviceKind.AUTO_ALARM}),
    EventType.ALARM_CANCEL: frozenset({DeviceKind.ALARM_UNIT}),
    EventType.FALL_DETECTED: frozenset({DeviceKind.FALL_SENSOR}),
    EventType.SMOKE_DETECTED: frozenset({DeviceKind.SMOKE_DETECTOR}),
    EventType.SMOKE_CLEARED: frozenset({DeviceKind.SMOKE_DETECTOR}),
    EventType.DOOR_OPENED: frozenset({DeviceKind.DOOR_SENSOR}),
    EventType.DOOR_CLOSED: frozenset({DeviceKind.DOOR_SENSOR}),
    EventType.DOOR_UNLOCKED: frozenset({DeviceKind.DOOR_LOCK}),
    EventType.DOOR_LOCKED: frozenset({DeviceKind.DOOR_LOCK}),
    EventType.MOTION: frozenset({DeviceKind.MOTION_SENSOR}),
    EventType.LOCATION: frozenset({DeviceKind.GPS_TRACKER, DeviceKind.PHONE}),
    EventType.HEARTBEAT: ANY_KIND,
    EventType.BATTERY_LOW: ANY_KIND,
}

AUTO_ALARM_SOURCES: Final = frozenset({"bed", "epilepsy", "enuresis", "other"})

# Device health (docs/contract.md#4-rules-and-alerts): the rules' device_offline and
# battery_low decide with these, and the resident card and GET /api/devices/health
# say the same in words (docs/devices.md).

#: a device is offline after this many silent heartbeat periods (`heartbeat_s` each)
MISSED_HEARTBEATS: Final = 3
#: kinds whose silence is a high-priority device_offline (other kinds: medium)
ALARM_CRITICAL_KINDS: Final = frozenset({DeviceKind.ALARM_UNIT})
#: a battery report below this (percent) is a low battery
BATTERY_LOW_BELOW: Final = 15.0
#: ... and one from this on ends a battery_low alert (hysteresis)
BATTERY_OK_FROM: Final = 30.0


def valid_id(value: object) -> bool:
    """True for a `device_id`, `team_id` or `alert_id`: 1–64 of `[A-Za-z0-9_.-]`."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


class Reason(StrEnum):
    """Why a message went to the dead-letter store (a label for metrics too)."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    BAD_FIELD = "bad_field"
    BAD_TIME = "bad_time"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_KIND = "wrong_kind"
    BAD_STATUS = "bad_status"
    TOO_DEEP = "too_deep"
    BAD_NUMBER = "bad_number"
    BAD_TEXT = "bad_text"
    #: the gateway failed on this message for a reason of its own (a bug): kept, not lost
    INTERNAL_ERROR = "internal_error"
    #: not a message: a summary of the dead letters of one source held back by the limits
    RATE_LIMITED = "rate_limited"


class InvalidMessage(ValueError):
    """A message that breaks the contract; `reason` is the metric label, `detail` the text."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Event:
    """One valid device event, as handed from the gateway to the processors."""

    device_id: str
    event_id: str
    type: EventType
    ts: datetime
    received_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    resident_id: str = ""
    #: the payload as received (JSON text), when the event came from a device; storage
    #: hands it to PostgreSQL as it is instead of serialising `data` again
    text: str = field(default="", repr=False, compare=False)

    def ref(self) -> dict[str, Any]:
        """The `trigger` / `last_event` object of an alert (docs/contract.md#3-alerts)."""
        return {
            "device_id": self.device_id,
            "event_id": self.event_id,
            "type": str(self.type),
            "ts": self.ts.isoformat(),
            "received_at": self.received_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic: `{prefix}/devices/{device_id}/{events|status}`."""

    device_id: str
    channel: str  # "events" or "status"


_EVENT_TYPES: Final = {t.value: t for t in EventType}


def parse_topic(topic: str, prefix: str) -> Topic:
    """A device topic under `prefix`; raises InvalidMessage (bad_topic)."""
    head = prefix + "/devices/"
    if not topic.startswith(head):
        raise InvalidMessage(Reason.BAD_TOPIC, f"topic {topic!r} is not under {head}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or parts[1] not in ("events", "status"):
        raise InvalidMessage(Reason.BAD_TOPIC, f"topic {topic!r} is not devices/{{id}}/events")
    if not valid_id(parts[0]):
        raise InvalidMessage(Reason.BAD_TOPIC, f"device id {parts[0]!r} is not 1-64 of [A-Za-z0-9_.-]")
    return Topic(parts[0], parts[1])


def parse_timestamp(value: object) -> datetime:
    """An RFC 3339 time with an explicit offset (`Z` or `±hh:mm`)."""
    if not isinstance(value, str):
        raise InvalidMessage(Reason.BAD_TIME, "ts must be an RFC 3339 string")
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt ":
        raise InvalidMessage(Reason.BAD_TIME, f"ts {value!r} is not RFC 3339")
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage(Reason.BAD_TIME, f"ts {value!r} is not RFC 3339") from None
    offset = ts.utcoffset()
    if offset is None:
        raise InvalidMessage(Reason.BAD_TIME, f"ts {value!r} has no UTC offset")
    if abs(offset) > MAX_OFFSET or offset % _MINUTE:
        raise InvalidMessage(Reason.BAD_TIME, f"ts {value!r}: the UTC offset must be whole minutes within ±15:59")
    return ts


def _number(data: dict[str, Any], key: str, low: float, high: float | None) -> None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidMessage(Reason.BAD_FIELD, f"data.{key} must be a number")
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidMessage(Reason.BAD_FIELD, f"data.{key} {value} is outside {span}")


def _string(data: dict[str, Any], key: str, *, required: bool) -> None:
    if key not in data:
        if required:
            raise InvalidMessage(Reason.BAD_FIELD, f"data.{key} is required")
        return
    value = data[key]
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise InvalidMessage(Reason.BAD_FIELD, f"data.{key} must be a string of 1-64 characters")


def check_data(kind: EventType, data: dict[str, Any]) -> None:
    """Validate `data` for an event type (docs/contract.md#3-events table); raises InvalidMessage."""
    if kind is EventType.ALARM_AUTO:
        if data.get("source") not in AUTO_ALARM_SOURCES:
            raise InvalidMessage(
                Reason.BAD_FIELD, "data.source must be one of bed, epilepsy, enuresis, other"
            )
    elif kind is EventType.FALL_DETECTED:
        if "confidence" in data:
            _number(data, "confidence", 0, 1)
    elif kind in (EventType.DOOR_OPENED, EventType.DOOR_CLOSED):
        _string(data, "door", required=False)
    elif kind in (EventType.DOOR_UNLOCKED, EventType.DOOR_LOCKED):
        _string(data, "by", required=False)
    elif kind is EventType.MOTION:
        _string(data, "room", required=False)
    elif kind is EventType.LOCATION:
        _number(data, "lat", -90, 90)
        _number(data, "lon", -180, 180)
        _number(data, "accuracy_m", 0, None)
    elif kind is EventType.HEARTBEAT:
        if "battery_pct" in data:
            _number(data, "battery_pct", 0, 100)
    elif kind is EventType.BATTERY_LOW:
        _number(data, "battery_pct", 0, 100)


_MINUTE: Final = timedelta(minutes=1)
#: a JSON escape that may make text PostgreSQL refuses: \u0000 or a UTF-16 surrogate
#: (one of a proper pair is fine; the walk looks at the decoded strings)
_RISKY_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR: Final = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> bool:
    """True if PostgreSQL can store `value` as text: no NUL, no lone UTF-16 surrogate
    (for text from people and documents, not only from devices)."""
    return _BAD_CHAR.search(value) is None


def _refuse_constant(name: str) -> Any:
    raise InvalidMessage(Reason.BAD_NUMBER, f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text) < 16:  # at most 15 digits: well within ±2^53
        return int(text)
    value = int(text) if len(text) <= 17 else MAX_NUMBER + 1  # 2^53 has 16 digits
    if -MAX_NUMBER <= value <= MAX_NUMBER:
        return value
    raise InvalidMessage(Reason.BAD_NUMBER, f"integer {text[:40]} is outside ±2^53")


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_TEXT:
        raise InvalidMessage(Reason.BAD_NUMBER, f"number {text[:40]}… is longer than {MAX_NUMBER_TEXT} characters")
    if ("e" in text or "E" in text) and abs(int(text[max(text.find("e"), text.find("E")) + 1 :])) > MAX_EXPONENT:
        raise InvalidMessage(Reason.BAD_NUMBER, f"number {text} has an exponent beyond ±{MAX_EXPONENT}")
    value = float(text)
    if -MAX_NUMBER <= value <= MAX_NUMBER:  # not inf: 1e400 reads as inf
        return value
    raise InvalidMessage(Reason.BAD_NUMBER, f"number {text} is outside ±2^53")


#: numbers are checked as they are parsed: NaN and Infinity are refused, integers and
#: other numbers bounded (the hooks run only for numbers, so a heartbeat pays little)
_DECODER: Final = json.JSONDecoder(parse_float=_bounded_float, parse_int=_bounded_int,
                                   parse_constant=_refuse_constant)


def _load(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except InvalidMessage:
        raise
    except RecursionError:
        raise InvalidMessage(Reason.TOO_DEEP, f"payload nests more than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidMessage(Reason.BAD_JSON, f"payload is not JSON ({exc})") from None


def _check_text(text: str) -> None:
    found = _BAD_CHAR.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise InvalidMessage(Reason.BAD_FIELD, "payload contains \\u0000, which cannot be stored")
    raise InvalidMessage(Reason.BAD_TEXT, f"payload contains a lone UTF-16 surrogate {found.group()!r},"
                                          " which is not Unicode text and cannot be stored")


def _inspect(doc: dict[str, Any], *, strings: bool) -> None:
    """Walk the document (without recursion, so depth costs no stack): nesting within
    MAX_DEPTH, and with `strings` every key and string free of NUL and lone surrogates."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_DEPTH:
            raise InvalidMessage(Reason.TOO_DEEP, f"payload nests more than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if strings:
                for key in node:
                    _check_text(key)
            children: Any = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
            elif strings and isinstance(child, str):
                _check_text(child)


def parse_event(device_id: str, payload: bytes, received_at: datetime) -> Event:
    """Parse and validate one event payload; raises InvalidMessage with the reason.

    Registry checks (known device, type fits kind) are the caller's: they need the registry.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(
            Reason.TOO_LARGE, f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(Reason.NOT_UTF8, f"payload is not UTF-8 ({exc.reason})") from None
    doc = _load(text)
    if not isinstance(doc, dict):
        raise InvalidMessage(Reason.NOT_OBJECT, f"payload is a JSON {type(doc).__name__}, not an object")
    # Cheap tests of the text decide whether the document needs walking: deeper than
    # MAX_DEPTH needs more brackets than that, and NUL or a surrogate needs an escape.
    deep = text.count("{") + text.count("[") > MAX_DEPTH
    risky = "\\u" in text and _RISKY_ESCAPE.search(text) is not None
    if deep or risky:
        _inspect(doc, strings=risky)

    event_id = doc.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 64:
        raise InvalidMessage(Reason.BAD_FIELD, "id must be a string of 1-64 characters")
    raw_type = doc.get("type")
    if not isinstance(raw_type, str):
        raise InvalidMessage(Reason.BAD_FIELD, "type is required and must be a string")
    kind = _EVENT_TYPES.get(raw_type)
    if kind is None:
        raise InvalidMessage(Reason.UNKNOWN_TYPE, f"type {raw_type!r} is not an event type")
    if "ts" not in doc:
        raise InvalidMessage(Reason.BAD_TIME, "ts is required")
    ts = parse_timestamp(doc["ts"])
    if ts > received_at + MAX_FUTURE:
        raise InvalidMessage(Reason.BAD_TIME, f"ts {doc['ts']} is more than 24 h in the future")
    if ts < received_at - MAX_PAST:
        raise InvalidMessage(Reason.BAD_TIME, f"ts {doc['ts']} is more than 30 days in the past")
    data = doc.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidMessage(Reason.BAD_FIELD, "data must be an object")
    check_data(kind, data)
    return Event(device_id, event_id, kind, ts, received_at, data, text=text)


def rekeyed_id(event_id: str, type: str, ts: datetime) -> str:
    """The id under which an event is stored and alerted when its `(device_id, id)` is
    already taken by an event of another type or time (a device whose counter reset, or
    an id reused after the de-duplication window): the id, `~`, and 8 hex digits of
    sha256 over type and device time in microseconds. Deterministic, so a re-sent copy
    of the colliding event is recognised as a copy."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1)
    digest = hashlib.sha256(f"{type}|{micros}".encode()).hexdigest()
    return f"{event_id}~{digest[:8]}"


def parse_status(payload: bytes) -> bool:
    """A status payload: True for `online`, False for `offline`."""
    if len(payload) > 64:  # whatever it holds, not a status: no copies of a large one
        raise InvalidMessage(Reason.BAD_STATUS, f"status must be 'online' or 'offline' (got {len(payload)} bytes)")
    text = payload.strip().lower()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    raise InvalidMessage(Reason.BAD_STATUS, "status must be 'online' or 'offline'")


def utcnow() -> datetime:
    return datetime.now(UTC)


def events_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/devices/{device_id}/events"


def status_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/devices/{device_id}/status"


def alert_topic(prefix: str, team_id: str, alert_id: str) -> str:
    return f"{prefix}/teams/{team_id}/alerts/{alert_id}"


def dumps(doc: Any) -> bytes:
    """Compact JSON as sent on the wire."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
