"""MQTT packets for Trygg's own lean clients (MQTT 3.1.1 and 5): building CONNECT,
SUBSCRIBE, PUBLISH and PUBACK, and parsing whole packets out of a receive buffer.

The clients that use them (mqtt/connection.py) sit on the hot paths: the ingest
subscriber and the alert publisher. Why not paho-mqtt there: paho reads one packet per
`select()` with three or more `recv()` calls, builds MQTT 5 property objects for every
message, cannot batch manual acknowledgements, and runs a network thread of its own that
every alert must cross (docs/design-notes.md). Simulators and tests use paho.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

MQTT311 = 4
MQTT5 = 5

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
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


def connect_packet(client_id: str, version: int, keepalive: int, username: str | None,
                   password: str | None, session_expiry: int, receive_maximum: int,
                   clean: bool = False) -> bytes:
    """`clean=False`: a persistent session (clean session / clean start 0)."""
    flags = 0x02 if clean else 0
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    body = _string("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == MQTT5:
        props = b""
        if session_expiry:
            props += b"\x11" + struct.pack("!I", session_expiry)
        if receive_maximum:
            props += b"\x21" + struct.pack("!H", receive_maximum)
        body += _varint(len(props)) + props
    body += _string(client_id)
    if username is not None:
        body += _string(username)
        if password is not None:
            body += _string(password)
    return _packet(0x10, body)


def subscribe_packet(mid: int, filters: Sequence[str], version: int, qos: int = 1) -> bytes:
    body = struct.pack("!H", mid)
    if version == MQTT5:
        body += b"\x00"
    for f in filters:
        body += _string(f) + bytes([qos])
    return _packet(0x82, body)


def publish_packet(topic: str, payload: bytes, mid: int, version: int, *, retain: bool = False,
                   dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH."""
    first = 0x32 | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = _string(topic) + struct.pack("!H", mid)
    if version == MQTT5:
        body += b"\x00"  # no properties
    return _packet(first, body + payload)


def puback_packets(mids: Sequence[int]) -> bytes:
    return b"".join(b"\x40\x02" + struct.pack("!H", m) for m in mids)


def parse_packets(
    buf: bytearray, version: int, limit: int = 1 << 30
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
                if version == MQTT5:  # skip the properties
                    plen, mult2 = 0, 1
                    while True:
                        if p >= stop or mult2 > 128**3:
                            raise ProtocolError("malformed PUBLISH properties")
                        byte = buf[p]
                        p += 1
                        plen += (byte & 0x7F) * mult2
                        if not byte & 0x80:
                            break
                        mult2 *= 128
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


