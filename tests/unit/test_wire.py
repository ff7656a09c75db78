"""The ingest subscriber's packet parser: whole packets only, any chunk boundary."""

from __future__ import annotations

import struct

import pytest

from mqtt.wire import MQTT5, MQTT311, ProtocolError, _packet, _string, _varint, parse_packets, puback_packets


def publish(topic: str, payload: bytes, mid: int, qos: int = 1, version: int = MQTT311,
            props: bytes = b"") -> bytes:
    body = _string(topic) + (struct.pack("!H", mid) if qos else b"")
    if version == MQTT5:
        body += _varint(len(props)) + props
    return _packet(0x30 | (qos << 1), body + payload)


@pytest.mark.parametrize("version", [MQTT311, MQTT5])
def test_every_chunk_boundary_gives_the_same_messages(version: int) -> None:
    props = b"\x01\x01" if version == MQTT5 else b""  # payload format indicator
    stream = (publish("a/devices/d-1/events", b'{"id":"1"}', 1, version=version, props=props)
              + publish("a/devices/d-2/events", b"x" * 300, 2, version=version)
              + publish("a/q0", b"zero", 0, qos=0, version=version)
              + b"\xd0\x00")  # PINGRESP
    for cut in range(len(stream) + 1):
        buf = bytearray(stream[:cut])
        got, others, used = parse_packets(buf, version)
        del buf[:used]
        buf += stream[cut:]
        more, others2, used2 = parse_packets(buf, version)
        messages = got + more
        assert [(m.topic, m.payload, m.mid, m.qos) for m in messages] == [
            ("a/devices/d-1/events", b'{"id":"1"}', 1, 1),
            ("a/devices/d-2/events", b"x" * 300, 2, 1),
            ("a/q0", b"zero", 0, 0),
        ], cut
        assert [f >> 4 for f, _ in others + others2] == [13]
        assert used2 == len(buf)


def test_connack_then_redelivered_publishes_in_one_chunk_keeps_the_publishes() -> None:
    connack = b"\x20\x02\x01\x00"
    stream = bytearray(connack + publish("t", b"p", 7))
    _, others, used = parse_packets(stream, MQTT311, limit=1)
    assert [f >> 4 for f, _ in others] == [2]
    del stream[:used]
    messages, _, _ = parse_packets(stream, MQTT311)
    assert [(m.topic, m.mid) for m in messages] == [("t", 7)]


def test_large_remaining_length_and_non_utf8_topic() -> None:
    big = publish("t", b"y" * 20_000, 9)
    bad = _packet(0x32, struct.pack("!H", 2) + b"\xff\xfe" + struct.pack("!H", 3) + b"p")
    messages, _, used = parse_packets(bytearray(big + bad), MQTT311)
    assert used == len(big) + len(bad)
    assert len(messages[0].payload) == 20_000
    assert messages[1].topic == b"\xff\xfe"


def test_pubacks_are_four_bytes_each() -> None:
    assert puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


MALFORMED = [
    # (name, version, packet): each a whole packet by its remaining length, wrong inside
    ("no room for the topic length", MQTT311, _packet(0x32, b"\x00")),
    ("topic longer than the packet", MQTT311, _packet(0x32, struct.pack("!H", 100) + b"short")),
    ("no room for the packet id", MQTT311, _packet(0x32, _string("t") + b"\x01")),
    ("QoS 3", MQTT311, _packet(0x36, _string("t") + b"\x00\x01p")),
    ("properties longer than the packet", MQTT5, _packet(0x32, _string("t") + b"\x00\x01" + _varint(50) + b"p")),
    ("properties length never ends", MQTT5, _packet(0x30, _string("t") + b"\xff\xff\xff\xff\xff")),
    ("properties length cut off", MQTT5, _packet(0x32, _string("t") + b"\x00\x01")),
]


@pytest.mark.parametrize(("name", "version", "packet"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_publish_is_a_protocol_error_not_a_crash_or_a_read_past_it(
    name: str, version: int, packet: bytes
) -> None:
    """Bytes that are not MQTT end the connection (ProtocolError); any other exception
    would escape the connection's `data_received` and read the next packet as this one."""
    following = publish("t/next", b"next", 9, version=version)
    with pytest.raises(ProtocolError):
        parse_packets(bytearray(packet + following), version)
