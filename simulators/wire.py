"""What a simulator sends: `SimMessage`s with their topic, payload and simulated time.

Times inside the simulators are integer milliseconds since the Unix epoch (UTC), so that
a stream is exactly reproducible; they become RFC 3339 with the resident's UTC offset
only on the wire (`"2026-11-22T14:03:07.120+01:00"`, docs/contract.md#3-mqtt-contract).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Literal

from trygg.contract import EventType, events_topic, status_topic

Channel = Literal["events", "status"]
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_QUARTER_MS: Final = 15 * 60_000
# The same compact JSON as `trygg.contract.dumps`, without building an encoder per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def to_ms(when: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    if when.tzinfo is None:
        raise ValueError("a naive datetime has no place on a simulated clock")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int, zone: tzinfo = UTC) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone)


class TsFormatter:
    """RFC 3339 with milliseconds and a zone's UTC offset, fast enough for heartbeats.

    The offset is looked up once per quarter of an hour (time-zone transitions fall on
    quarter hours), the rest is arithmetic.
    """

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._offsets: dict[int, tuple[int, str]] = {}

    def _offset(self, quarter: int) -> tuple[int, str]:
        when = _EPOCH + timedelta(milliseconds=quarter * _QUARTER_MS)
        delta = when.astimezone(self.zone).utcoffset() or timedelta(0)
        minutes = int(delta.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        text = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        if len(self._offsets) > 10_000:
            self._offsets.clear()
        self._offsets[quarter] = (minutes * 60_000, text)
        return self._offsets[quarter]

    def __call__(self, ms: int) -> str:
        quarter = ms // _QUARTER_MS
        found = self._offsets.get(quarter)
        offset_ms, text = found if found is not None else self._offset(quarter)
        local = _NAIVE_EPOCH + timedelta(milliseconds=ms + offset_ms)
        return local.isoformat(timespec="milliseconds") + text


def format_ts(ms: int, zone: tzinfo) -> str:
    """RFC 3339 with milliseconds and the zone's offset at that instant."""
    return from_ms(ms, zone).isoformat(timespec="milliseconds")


def encode_event(
    event_id: str, ts: str, kind: EventType | str, data: dict[str, Any]
) -> bytes:
    """An event payload; `data` is left out when empty, as the contract allows."""
    if kind is EventType.HEARTBEAT and '"' not in event_id:  # the bulk of all traffic
        pct = data.get("battery_pct")
        head = f'{{"id":"{event_id}","ts":"{ts}","type":"heartbeat"'
        if pct is None and not data:
            return (head + "}").encode()
        if type(pct) is int and len(data) == 1:
            return (head + f',"data":{{"battery_pct":{pct}}}}}').encode()
    doc: dict[str, Any] = {"id": event_id, "ts": ts, "type": str(kind)}
    if data:
        doc["data"] = data
    return _ENCODER.encode(doc).encode()


def run_tag(start_ms: int, seed: int | None = None) -> str:
    """A short prefix for event ids, unique per simulated start (and seed).

    Event ids are unique per device *and* per run: a second run against the same database
    must not be swallowed by the gateway's de-duplication on `(device_id, id)`.
    """
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    value, text = start_ms // 1000, ""
    while value:
        value, rem = divmod(value, 36)
        text = digits[rem] + text
    return f"{text or '0'}{'' if seed is None else f's{seed}'}"


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT publication of a simulated device, at a simulated time."""

    at_ms: int  # when it is published (simulated clock)
    device_id: str
    channel: Channel
    payload: bytes
    type: str  # the event type, or "status.online" / "status.offline"
    ts_ms: int  # when it happened on the device; earlier than at_ms for a late message
    duplicate: bool = False  # a re-send of an earlier message (same id)

    @property
    def retain(self) -> bool:
        return self.channel == "status"

    @property
    def late(self) -> bool:
        return self.at_ms > self.ts_ms and not self.duplicate

    def topic(self, prefix: str) -> str:
        if self.channel == "status":
            return status_topic(prefix, self.device_id)
        return events_topic(prefix, self.device_id)

    def at(self) -> datetime:
        return from_ms(self.at_ms)


def status_message(at_ms: int, device_id: str, online: bool) -> SimMessage:
    payload = ONLINE if online else OFFLINE
    return SimMessage(at_ms, device_id, "status", payload, f"status.{payload.decode()}", at_ms)


__all__ = [
    "OFFLINE",
    "ONLINE",
    "Channel",
    "SimMessage",
    "TsFormatter",
    "encode_event",
    "format_ts",
    "from_ms",
    "run_tag",
    "status_message",
    "to_ms",
]
