"""The ingest subscriber's packet parser: whole packets only, any chunk boundary."""

from __future__ import annotations

import struct

import pytest

from mqtt.wire import (
    Protocol,
    ProtocolError,
    Will,
    _packet,
    _string,
    _varint,
    connect_packet,
    parse_connack,
    parse_packets,
    parse_suback,
    puback_packets,
)


def publish(topic: str, payload: bytes, mid: int, qos: int = 1, version: Protocol = Protocol.V311,
            props: bytes = b"") -> bytes:
    body = _string(topic) + (struct.pack("!H", mid) if qos else b"")
    if version == Protocol.V5:
        body += _varint(len(props)) + props
    return _packet(0x30 | (qos << 1), body + payload)


@pytest.mark.parametrize("version", [Protocol.V311, Protocol.V5])
def test_every_chunk_boundary_gives_the_same_messages(version: Protocol) -> None:
    props = b"\x01\x01" if version == Protocol.V5 else b""  # payload format indicator
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
    _, others, used = parse_packets(stream, Protocol.V311, limit=1)
    assert [f >> 4 for f, _ in others] == [2]
    del stream[:used]
    messages, _, _ = parse_packets(stream, Protocol.V311)
    assert [(m.topic, m.mid) for m in messages] == [("t", 7)]


def test_large_remaining_length_and_non_utf8_topic() -> None:
    big = publish("t", b"y" * 20_000, 9)
    bad = _packet(0x32, struct.pack("!H", 2) + b"\xff\xfe" + struct.pack("!H", 3) + b"p")
    messages, _, used = parse_packets(bytearray(big + bad), Protocol.V311)
    assert used == len(big) + len(bad)
    assert len(messages[0].payload) == 20_000
    assert messages[1].topic == b"\xff\xfe"


def test_pubacks_are_four_bytes_each() -> None:
    assert puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


MALFORMED = [
    # (name, version, packet): each a whole packet by its remaining length, wrong inside
    ("no room for the topic length", Protocol.V311, _packet(0x32, b"\x00")),
    ("topic longer than the packet", Protocol.V311, _packet(0x32, struct.pack("!H", 100) + b"short")),
    ("no room for the packet id", Protocol.V311, _packet(0x32, _string("t") + b"\x01")),
    ("QoS 3", Protocol.V311, _packet(0x36, _string("t") + b"\x00\x01p")),
    ("properties longer than the packet", Protocol.V5, _packet(0x32, _string("t") + b"\x00\x01" + _varint(50) + b"p")),
    ("properties length never ends", Protocol.V5, _packet(0x30, _string("t") + b"\xff\xff\xff\xff\xff")),
    ("properties length cut off", Protocol.V5, _packet(0x32, _string("t") + b"\x00\x01")),
]


@pytest.mark.parametrize(("name", "version", "packet"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_publish_is_a_protocol_error_not_a_crash_or_a_read_past_it(
    name: str, version: Protocol, packet: bytes
) -> None:
    """Bytes that are not MQTT end the connection (ProtocolError); any other exception
    would escape the connection's `data_received` and read the next packet as this one."""
    following = publish("t/next", b"next", 9, version=version)
    with pytest.raises(ProtocolError):
        parse_packets(bytearray(packet + following), version)


def test_the_protocol_setting_is_read_in_its_usual_spellings() -> None:
    assert [Protocol.parse(s) for s in ("5", "3.1.1", "311", "MQTTv5")] == [
        Protocol.V5, Protocol.V311, Protocol.V311, Protocol.V5]
    with pytest.raises(ValueError, match=r"5 or 3\.1\.1"):
        Protocol.parse("3")


def test_connack_says_whether_the_session_was_kept_and_how_many_messages_may_be_in_flight() -> None:
    props = b"\x21\x00\x05" + b"\x12" + _string("auto-1") + b"\x13\x00\x3c" + b"\x26" + _string("k") + _string("v")
    connack = parse_connack(b"\x01\x00" + _varint(len(props)) + props, Protocol.V5)
    assert (connack.session_present, connack.receive_maximum, connack.assigned_client_id,
            connack.server_keepalive) == (True, 5, "auto-1", 60)
    plain = parse_connack(b"\x00\x00", Protocol.V311)
    assert (plain.code, plain.session_present, plain.receive_maximum) == (0, False, 65_535)
    assert parse_connack(b"\x00\x86\x00", Protocol.V5).code == 0x86


@pytest.mark.parametrize(("why", "body"), [
    ("too short", b"\x01"),
    ("property length never ends", b"\x00\x00\xff\xff\xff\xff\xff"),
    ("properties longer than the packet", b"\x00\x00" + _varint(9) + b"\x21\x00\x05"),
    ("a string runs past the properties", b"\x00\x00" + _varint(4) + b"\x12\x00\x09ab"),
    ("an unknown property", b"\x00\x00" + _varint(2) + b"\x7f\x00"),
])
def test_a_malformed_connack_is_a_protocol_error(why: str, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_connack(body, Protocol.V5)


def test_a_suback_names_its_packet_id_and_reason_codes() -> None:
    assert parse_suback(b"\x00\x07\x01\x80", Protocol.V311) == (7, b"\x01\x80")
    assert parse_suback(b"\x01\x00" + _varint(3) + b"\x1f\x00\x00" + b"\x01", Protocol.V5) == (256, b"\x01")


@pytest.mark.parametrize(("version", "body"), [
    (Protocol.V311, b"\x00"),
    (Protocol.V311, b"\x00\x07"),
    (Protocol.V5, b"\x00\x07\x00"),
    (Protocol.V5, b"\x00\x07\xff\xff\xff\xff\xff"),
])
def test_a_malformed_suback_is_a_protocol_error(version: Protocol, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_suback(body, version)


@pytest.mark.parametrize("version", [Protocol.V311, Protocol.V5])
def test_a_last_will_goes_after_the_client_id_and_before_the_login(version: Protocol) -> None:
    will = Will("t/d-1/status", b"offline", qos=1, retain=True)
    packet = connect_packet("sim-1", version, 30, "u", "pw", 0, 0, clean=True, will=will)
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # login, will retain, will QoS 1, will, clean
    props = b"\x00" if version == Protocol.V5 else b""
    body = (b"\x00\x04MQTT" + bytes([version, flags]) + b"\x00\x1e" + props + b"\x00\x05sim-1" + props
            + b"\x00\x0ct/d-1/status" + b"\x00\x07offline" + b"\x00\x01u" + b"\x00\x02pw")
    assert packet == bytes([0x10, len(body)]) + body
