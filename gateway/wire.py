"""A lean MQTT subscriber for the ingest hot path (MQTT 3.1.1 and 5).

Why not paho-mqtt here: paho reads one packet per `select()` with three or more
`recv()` calls and builds MQTT 5 property objects for every message; with manual
acknowledgement it cannot batch. Measured on this project's 2-core budget it topped out
at ~4,200 events/s with the gateway process at 0.8 cores (docs/design-notes.md). This
client reads the socket in large chunks, parses PUBLISH packets in a tight loop, hands
them over a chunk at a time, and writes PUBACKs in batches once the events are durable.
Everything else that speaks MQTT in Trygg (alert delivery, simulators, tests) uses paho.

Scope: CONNECT (persistent session: clean session 0 / clean start 0 with a session
expiry; receive maximum on MQTT 5; username and password), SUBSCRIBE, incoming PUBLISH
at QoS 0 and 1 (QoS 2 subscriptions are downgraded to 1 by asking for 1), PUBACK,
PINGREQ keepalive, DISCONNECT. Reconnects with jittered exponential backoff.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import BrokerUnavailable

MQTT311 = 4
MQTT5 = 5

_CONNACK, _PUBLISH, _PUBACK, _SUBACK, _PINGRESP, _DISCONNECT = 2, 3, 4, 9, 13, 14
_PINGREQ = b"\xc0\x00"
_RECV_BYTES = 256 * 1024


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
                   password: str | None, session_expiry: int, receive_maximum: int) -> bytes:
    flags = 0  # clean session / clean start = 0: a persistent session
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    body = _string("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == MQTT5:
        props = b"\x11" + struct.pack("!I", session_expiry) + b"\x21" + struct.pack("!H", receive_maximum)
        body += _varint(len(props)) + props
    body += _string(client_id)
    if username is not None:
        body += _string(username)
        if password is not None:
            body += _string(password)
    return _packet(0x10, body)


def subscribe_packet(mid: int, filters: Sequence[str], version: int) -> bytes:
    body = struct.pack("!H", mid)
    if version == MQTT5:
        body += b"\x00"
    for f in filters:
        body += _string(f) + b"\x01"  # QoS 1
    return _packet(0x82, body)


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
            if kind == _PUBLISH:
                qos = (first >> 1) & 3
                tlen = (buf[i] << 8) | buf[i + 1]
                p = i + 2 + tlen
                raw_topic = bytes(view[i + 2 : p])
                mid = 0
                if qos:
                    mid = (buf[p] << 8) | buf[p + 1]
                    p += 2
                if version == MQTT5:  # skip the properties
                    plen, mult2 = 0, 1
                    while True:
                        byte = buf[p]
                        p += 1
                        plen += (byte & 0x7F) * mult2
                        if not byte & 0x80:
                            break
                        mult2 *= 128
                    p += plen
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


class Subscriber:
    """Receives on a thread of its own and calls `on_messages(batch, generation)`.

    `generation` counts connections: an acknowledgement for a message of an earlier
    connection is not sent (the broker redelivers it on the new one).
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        filters: Sequence[str],
        on_messages: Callable[[list[Message], int], None],
        *,
        version: int = MQTT5,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        session_expiry: int = 7 * 24 * 3600,
        receive_maximum: int = 10_000,
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._client_id = client_id
        self._filters = list(filters)
        self._on_messages = on_messages
        self._version = version
        self._username, self._password = username, password
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._receive_maximum = receive_maximum
        self._on_state = on_state or (lambda up, why: None)
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self.generation = 0
        self.subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trygg-mqtt-in", daemon=True)
        self._last_send = time.monotonic()
        self._pending = bytearray()

    # -- public ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe once (raises BrokerUnavailable), then keep it up."""
        try:
            self._connect()
        except (OSError, ProtocolError) as exc:
            raise BrokerUnavailable(f"mqtt://{self.host}:{self.port}", str(exc)) from exc
        self._thread.start()
        if not self.subscribed.wait(timeout):
            raise BrokerUnavailable(f"mqtt://{self.host}:{self.port}", "no SUBACK")

    def ack(self, mids: Sequence[int], generation: int) -> None:
        if not mids or generation != self.generation:
            return
        self._send(puback_packets(mids))

    def stop(self) -> None:
        """Disconnect cleanly (the session and its queued messages stay on the broker)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._send(b"\xe0\x00")
        self._close()
        if self._thread.is_alive():
            self._thread.join(5)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (like a crash, for tests)."""
        self._stopping.set()
        self._close()

    # -- connection -----------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return
            try:
                sock.sendall(data)
                self._last_send = time.monotonic()
            except OSError:
                self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.sendall(connect_packet(self._client_id, self._version, self._keepalive,
                                    self._username, self._password, self._session_expiry,
                                    self._receive_maximum))
        buf = bytearray()
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                raise ProtocolError("connection closed before CONNACK")
            buf += chunk
            # Only the CONNACK: redelivered messages may follow in the same chunk.
            _, others, used = parse_packets(buf, self._version, limit=1)
            if used:
                break
        if not others:
            raise ProtocolError("expected CONNACK, got a PUBLISH")
        first, body = others[0]
        if first >> 4 != _CONNACK or len(body) < 2:
            raise ProtocolError(f"expected CONNACK, got packet type {first >> 4}")
        if body[1] != 0:
            raise ProtocolError(f"broker refused the connection (code {body[1]})")
        del buf[:used]
        sock.settimeout(max(1.0, self._keepalive / 2))
        self.generation += 1
        self._sock = sock
        self._last_send = time.monotonic()
        self._pending = buf
        self._send(subscribe_packet(1, self._filters, self._version))

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._receive_loop()
            except (OSError, ProtocolError) as exc:
                if self._stopping.is_set():
                    break
                self._close()
                self.subscribed.clear()
                self._on_state(False, str(exc))
            # reconnect with jittered exponential backoff
            while not self._stopping.is_set():
                time.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    self._connect()
                    delay = 0.5
                    break
                except (OSError, ProtocolError) as exc:
                    self._close()
                    self._on_state(False, str(exc))
                    delay = min(delay * 2, 30.0)

    def _receive_loop(self) -> None:
        buf = self._pending
        generation = self.generation
        while not self._stopping.is_set():
            sock = self._sock
            if sock is None:
                raise OSError("connection closed")
            if time.monotonic() - self._last_send > self._keepalive / 2:
                self._send(_PINGREQ)
            if buf:
                messages, others, used = parse_packets(buf, self._version)
                if used:
                    del buf[:used]
                self._handle_others(others)
                if messages:
                    self._on_messages(messages, generation)
            try:
                chunk = sock.recv(_RECV_BYTES)
            except TimeoutError:
                continue
            if not chunk:
                raise OSError("broker closed the connection")
            buf += chunk

    def _handle_others(self, others: list[tuple[int, bytes]]) -> None:
        for first, body in others:
            kind = first >> 4
            if kind == _SUBACK:
                codes = body[2:] if self._version == MQTT311 else body[3 + body[2]:]
                if any(c >= 0x80 for c in codes):
                    raise ProtocolError(f"broker refused the subscription {list(codes)}")
                self.subscribed.set()
                self._on_state(True, "subscribed")
            elif kind == _DISCONNECT:
                raise ProtocolError(f"broker disconnected us (reason {body[:1].hex() or '00'})")
            # PINGRESP and anything else: nothing to do
