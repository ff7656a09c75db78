"""MQTT packets for Trygg's own client (MQTT 3.1.1 and 5): building CONNECT,
SUBSCRIBE, PUBLISH and PUBACK, reading CONNACK, and parsing whole packets out of a
receive buffer. No I/O: mqtt/connection.py does that.

The client sits on the hot paths: the ingest subscriber and the alert publisher. Why
not the general-purpose client Trygg used before: it read one packet per `select()`
with three or more `recv()` calls, built MQTT 5 property objects for every message,
could not batch manual acknowledgements, and ran a network thread of its own that every
alert had to cross (docs/design-notes.md).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class Protocol(IntEnum):
    """The MQTT protocol version, as CONNECT writes it (other clients' enums take its value)."""

    V311 = 4
    V5 = 5

    @classmethod
    def parse(cls, text: str) -> Protocol:
        """The setting's spelling (TRYGG_MQTT_PROTOCOL): "5", or "3.1.1" (also "311", "4")."""
        value = text.strip().lower().removeprefix("mqtt").removeprefix("v")
        if value in ("5", "5.0"):
            return cls.V5
        if value in ("3.1.1", "311", "4"):
            return cls.V311
        raise ValueError(f"unknown MQTT protocol version {text!r} (5 or 3.1.1)")


CONNACK, PUBLISH, PUBACK, SUBACK, DISCONNECT = 2, 3, 4, 9, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


class ProtocolError(Exception):
    """The broker sent something this client does not understand."""


@dataclass(slots=True)
class Message:
    topic: str | bytes  # bytes when the topic is not valid UTF-8
    payload: bytes
    mid: int
    qos: int


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for a client whose connection ends without
    DISCONNECT (its Last Will)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def connect_packet(client_id: str, version: Protocol, keepalive: int, username: str | None,
                   password: str | None, session_expiry: int, receive_maximum: int,
                   clean: bool = False, will: Will | None = None) -> bytes:
    """`clean=False`: a persistent session (clean session / clean start 0)."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    body = _string("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == Protocol.V5:
        props = b""
        if session_expiry:
            props += b"\x11" + struct.pack("!I", session_expiry)
        if receive_maximum:
            props += b"\x21" + struct.pack("!H", receive_maximum)
        body += _varint(len(props)) + props
    body += _string(client_id)
    if will is not None:
        if version == Protocol.V5:
            body += b"\x00"  # no will properties
        body += _string(will.topic) + _string(will.payload)
    if username is not None:
        body += _string(username)
        if password is not None:
            body += _string(password)
    return _packet(0x10, body)


def subscribe_packet(mid: int, filters: Sequence[str], version: Protocol, qos: int = 1) -> bytes:
    body = struct.pack("!H", mid)
    if version == Protocol.V5:
        body += b"\x00"
    for f in filters:
        body += _string(f) + bytes([qos])
    return _packet(0x82, body)


def publish_packet(topic: str, payload: bytes, mid: int, version: Protocol, *, retain: bool = False,
                   dup: bool = False, qos: int = 1) -> bytes:
    """A PUBLISH at QoS 1 (`mid` its packet id) or QoS 0 (`mid` unused)."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = _string(topic) + (struct.pack("!H", mid) if qos else b"")
    if version == Protocol.V5:
        body += b"\x00"  # no properties
    return _packet(first, body + payload)


@dataclass(frozen=True, slots=True)
class Connack:
    """What a CONNACK says: `code` 0 is accepted; the rest only from an MQTT 5 broker."""

    code: int
    session_present: bool
    #: QoS 1 publishes the broker takes unacknowledged at once (65,535: no limit said)
    receive_maximum: int = 65_535
    assigned_client_id: str | None = None
    server_keepalive: int | None = None


def _property_length(buf: bytes | bytearray, p: int, stop: int, packet: str) -> tuple[int, int]:
    """The MQTT 5 property length (a variable byte integer) at `p`, and where the
    properties begin; ProtocolError if it runs past `stop` or past four bytes."""
    length, mult = 0, 1
    while True:
        if p >= stop or mult > 128**3:
            raise ProtocolError(f"malformed {packet} properties")
        byte = buf[p]
        p += 1
        length += (byte & 0x7F) * mult
        if not byte & 0x80:
            return length, p
        mult *= 128


def parse_connack(body: bytes, version: Protocol) -> Connack:
    """The body of a CONNACK (raises ProtocolError when it is too short)."""
    if len(body) < 2:
        raise ProtocolError("CONNACK too short")
    connack = Connack(body[1], bool(body[0] & 1))
    if version != Protocol.V5 or connack.code != 0 or len(body) < 3:
        return connack
    length, p = _property_length(body, 2, len(body), "CONNACK")
    end = p + length
    if end > len(body):
        raise ProtocolError("CONNACK shorter than its properties")
    receive_maximum, client_id, keepalive = 65_535, None, None
    while p < end:  # the properties this client uses; the rest are skipped by their size
        ident = body[p]
        p += 1
        if ident in _PROPERTY_SIZE:
            value = body[p:p + _PROPERTY_SIZE[ident]]
            if ident == 0x21:
                receive_maximum = int.from_bytes(value) or 65_535
            elif ident == 0x13:
                keepalive = int.from_bytes(value)
            p += _PROPERTY_SIZE[ident]
        elif ident in (0x12, 0x1A, 0x1C, 0x1F, 0x15, 0x16):  # strings and binary data
            n = int.from_bytes(body[p:p + 2])
            if ident == 0x12:
                client_id = body[p + 2:p + 2 + n].decode(errors="replace")
            p += 2 + n
        elif ident == 0x26:  # user property: two strings
            for _ in range(2):
                p += 2 + int.from_bytes(body[p:p + 2])
        else:
            raise ProtocolError(f"unknown CONNACK property {ident:#x}")
    if p > end:
        raise ProtocolError("a CONNACK property runs past the properties")
    return Connack(connack.code, connack.session_present, receive_maximum, client_id, keepalive)


#: fixed-size CONNACK properties: session expiry, receive maximum, maximum QoS, retain
#: available, maximum packet size, topic alias maximum, the three "available" flags,
#: server keepalive
_PROPERTY_SIZE = {0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x22: 2, 0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2}


def parse_suback(body: bytes, version: Protocol) -> tuple[int, bytes]:
    """The packet id and the reason codes of a SUBACK (ProtocolError when malformed)."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    mid, p = (body[0] << 8) | body[1], 2
    if version == Protocol.V5:
        length, p = _property_length(body, p, len(body), "SUBACK")
        p += length
    codes = body[p:]
    if not codes:
        raise ProtocolError("SUBACK without reason codes")
    return mid, codes


def puback_packets(mids: Sequence[int]) -> bytes:
    return b"".join(b"\x40\x02" + struct.pack("!H", m) for m in mids)


def parse_packets(
    buf: bytearray, version: Protocol, limit: int = 1 << 30
) -> tuple[list[Message], list[tuple[int, bytes]], int]:
    """Parse up to `limit` whole packets from `buf`; returns (publishes, other packets,
    bytes used). An incomplete packet at the end stays in the buffer."""
    messages: list[Message] = []
    others: list[tuple[int, bytes]] = []
    pos, end = 0, len(buf)
    view = memoryview(buf)
    try:
        while pos + 2 <= end and limit > 0:
            limit -= 1
            first = buf[pos]
            # remaining length (1-4 bytes)
            mult, length, i = 1, 0, pos + 1
            while True:
                if i >= end:
                    return messages, others, pos
                byte = buf[i]
                length += (byte & 0x7F) * mult
                i += 1
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise ProtocolError("malformed remaining length")
            if i + length > end:
                break
            kind = first >> 4
            if kind == PUBLISH:
                # Every field is checked against the packet's end: a malformed PUBLISH is
                # a ProtocolError, never an IndexError or a read into the next packet.
                qos = (first >> 1) & 3
                stop = i + length
                if qos == 3 or length < 2:
                    raise ProtocolError("malformed PUBLISH")
                tlen = (buf[i] << 8) | buf[i + 1]
                p = i + 2 + tlen
                if p + (2 if qos else 0) > stop:
                    raise ProtocolError("PUBLISH shorter than its topic")
                raw_topic = bytes(view[i + 2 : p])
                mid = 0
                if qos:
                    mid = (buf[p] << 8) | buf[p + 1]
                    p += 2
                if version == Protocol.V5:  # skip the properties
                    plen, p = _property_length(buf, p, stop, "PUBLISH")
                    p += plen
                    if p > stop:
                        raise ProtocolError("PUBLISH shorter than its properties")
                try:
                    topic: str | bytes = raw_topic.decode()
                except UnicodeDecodeError:
                    topic = raw_topic
                messages.append(Message(topic, bytes(view[p : i + length]), mid, qos))
            else:
                others.append((first, bytes(view[i : i + length])))
            pos = i + length
    finally:
        view.release()
    return messages, others, pos


