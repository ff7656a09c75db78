"""The staff side of `bench/latency`, each in a process of its own, so that neither the
device that presses nor the other receiver shares its interpreter (and GIL) with it.

    python bench/_receivers.py handheld PORT TOPIC_FILTER
    python bench/_receivers.py console BASE_URL TOKEN

Each prints `ready` once subscribed, then one line `EVENT_ID ALERT_ID STATE SECONDS`
per alert change received, SECONDS being `time.perf_counter()` when the bytes arrived
(CLOCK_MONOTONIC, comparable across processes on this machine). The handheld is a plain MQTT 3.1.1
client on a socket, as a handheld's native client would be: it reads, acknowledges QoS 1
and reports; no client library's network thread sits between the broker and the clock.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mqtt.wire import Protocol, connect_packet, parse_packets, puback_packets, subscribe_packet


def _report(payload: bytes | str, at: float) -> None:
    if not payload:
        return  # a cleared retained copy
    alert = json.loads(payload)
    if isinstance(alert, dict) and alert.get("last_event"):
        sys.stdout.write(f"{alert['last_event']['event_id']} {alert['alert_id']} {alert['state']} {at:.7f}\n")
        sys.stdout.flush()


def _connect(host: str, port: int, greeting: bytes) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(greeting)
    return sock


def _arrivals(sock: socket.socket) -> Iterator[tuple[bytes, float]]:
    """What the socket delivers, each read with when it arrived, until it closes."""
    while data := sock.recv(1 << 16):
        yield data, time.perf_counter()


def handheld(port: int, topic_filter: str) -> None:
    sock = _connect("127.0.0.1", port, connect_packet("lat-staff", Protocol.V311, 60, None, None, 0, 0, clean=True)
                    + subscribe_packet(1, [topic_filter], Protocol.V311))
    buffer = bytearray()
    ready = False
    for data, at in _arrivals(sock):
        buffer += data
        messages, others, used = parse_packets(buffer, Protocol.V311)
        del buffer[:used]
        if not ready and any(first >> 4 == 9 for first, _ in others):  # SUBACK
            ready = True
            print("ready", flush=True)
        acks = [m.mid for m in messages if m.qos]
        if acks:
            sock.sendall(puback_packets(acks))
        for message in messages:
            _report(message.payload, at)


def console(base: str, token: str) -> None:
    """The console's live stream read off the socket: each `data:` line of an SSE event
    (uvicorn writes an event as one chunk, so its line arrives whole)."""
    url = urlsplit(base)
    sock = _connect(url.hostname or "127.0.0.1", url.port or 80,
                    f"GET /api/alerts/stream HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode())
    buffer = b""
    ready = False
    for data, at in _arrivals(sock):
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            if not ready and line.startswith(b"HTTP/1.1 "):
                if not line.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"console stream refused: {line.decode().strip()}")
                ready = True
                print("ready", flush=True)
            elif line.startswith(b"data: "):
                _report(line[6:].rstrip(b"\r"), at)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    try:
        if role == "handheld":
            handheld(int(args[0]), args[1])
        else:
            console(args[0], args[1])
    except (KeyboardInterrupt, BrokenPipeError, OSError):
        pass
