"""The devices and the staff of the cluster's fault test and benchmark (bench/_cluster.py
starts the cluster they talk to).

- `Fleet`: devices publishing `motion` at QoS 1 through Trygg's own MQTT client
  (`simulators.ConnectionPool`), a third of them on each NATS node's MQTT listener, paced;
- `Presser`: alarm presses (`alarm.button`) written to the socket by the device itself,
  the clock started when the bytes go out; a lost node → the next one, and what was not
  acknowledged is sent again (as a device's firmware does);
- `Handheld`: a staff handheld in a process of its own (`python bench/_fleet.py handheld
  ...`), subscribed to team topics, moving to the next node when its node dies,
  reporting each alert change it receives;
- `stored_counts`: what PostgreSQL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from cluster.layout import resident_partition
from mqtt import LoopThread
from mqtt.wire import (
    Protocol,
    connect_packet,
    parse_packets,
    parse_suback,
    puback_packets,
    publish_packet,
    subscribe_packet,
)
from simulators import ConnectionPool, MqttTarget

PREFIX = "trygg/v1"
HOST = "127.0.0.1"
TEAM, CENTRE = "east", "centre"

__all__ = ["CENTRE", "PREFIX", "TEAM", "Fleet", "Handheld", "Press", "Presser", "Pressers", "Stored",
           "cluster_registry_yaml", "stored_counts", "wait_stored"]


# --- The registry of the fleet and the pressers ----------------------------------------------


def fleet_device(i: int) -> str:
    return f"fd-{i}"


def presser_resident(i: int) -> str:
    return f"p-{i}"


def presser_device(i: int) -> str:
    return f"pd-{i}"


#: the fleet's devices are offline after 3 × this without a message: longer than a count
#: keeps them silent (bench/_drill.py), far shorter than a test runs
FLEET_HEARTBEAT_S = 120


def cluster_registry_yaml(devices: int, pressers: int, *, heartbeat_s: float = FLEET_HEARTBEAT_S) -> str:
    """Team east (escalating to the centre); `devices` residents with a motion sensor
    each (offline after 3 × `heartbeat_s` without a message: the publishing fleet
    hears them far more often) and `pressers` residents with an alarm unit each (one
    press per resident: each press is a new alert)."""
    lines = [f"teams: [{{id: {TEAM}, name: East, escalate_to: {CENTRE}}}, {{id: {CENTRE}, name: Centre}}]",
             "residents:"]
    lines += [f"  - {{id: f-{i}, name: F{i}, team: {TEAM}, devices: [{{id: {fleet_device(i)}, kind: motion_sensor, "
              f"heartbeat_s: {heartbeat_s}}}]}}" for i in range(devices)]
    lines += [f"  - {{id: {presser_resident(i)}, name: P{i}, team: {TEAM}, devices: [{{id: {presser_device(i)}, "
              f"kind: alarm_unit, heartbeat_s: 86400}}]}}" for i in range(pressers)]
    return "\n".join(lines) + "\n"


# --- The fleet ---------------------------------------------------------------------------------


class Fleet:
    """`devices` motion sensors publishing at QoS 1, a third on each node's MQTT listener
    (`connections` of Trygg's MQTT client per node, one per device unless given;
    `window` unacknowledged each). A node
    that dies stops its third (a device waits for its broker; what was not acknowledged
    is sent again when it is back), the others go on.

        fleet = Fleet(cluster.mqtt, 1000); fleet.connect()
        fleet.start(rate=5000) ... fleet.stop()   # stop: every publish acknowledged
    """

    def __init__(self, mqtt: Sequence[tuple[str, int]], devices: int, *, connections: int | None = None,
                 window: int = 20) -> None:
        self.loop = LoopThread("fleet").start()
        self.devices: list[list[str]] = [[fleet_device(i) for i in range(devices) if i % len(mqtt) == k]
                                         for k in range(len(mqtt))]
        # One connection per device by default, as a fleet has: NATS stores a connection's
        # QoS 1 messages one after another, so a few connections each carrying hundreds of
        # devices held the whole fleet to what a dozen connections get acknowledged (284/s).
        self.pools = [ConnectionPool(MqttTarget(host, port), [[d] for d in self.devices[k]], PREFIX,
                                     connections=connections or len(self.devices[k]), window=window,
                                     announce=False,
                                     client_id_prefix=f"fleet-n{k + 1}")
                      for k, (host, port) in enumerate(mqtt)]
        self.sent = [0] * len(mqtt)
        self._run: list[asyncio.Future[None]] = []
        self._stop: asyncio.Event | None = None

    def connect(self) -> None:
        for pool in self.pools:
            self.loop.run(pool.connect(), 60)

    @property
    def published(self) -> int:
        return sum(self.sent)

    def acked(self) -> int:
        return sum(pool.acked for pool in self.pools)

    def start(self, rate: float | None) -> None:
        """Publish `rate` events/s across the nodes (None: as fast as the windows allow)."""
        async def begin() -> None:
            self._stop = asyncio.Event()
            share = None if rate is None else rate / len(self.pools)
            self._run = [asyncio.ensure_future(self._publish(k, share, self._stop)) for k in range(len(self.pools))]

        self.loop.run(begin(), 10)

    def stop(self, flush_s: float = 120) -> bool:
        """Stop publishing; True once every publish is acknowledged (within `flush_s`)."""
        async def end() -> bool:
            assert self._stop is not None
            self._stop.set()
            await asyncio.gather(*self._run, return_exceptions=True)
            flushed = await asyncio.gather(*(p.flush(flush_s) for p in self.pools))
            return all(flushed)

        return self.loop.run(end(), flush_s + 30)

    async def _publish(self, k: int, rate: float | None, stop: asyncio.Event) -> None:
        pool, devices = self.pools[k], self.devices[k]
        loop = asyncio.get_running_loop()
        t0, first = loop.time(), self.sent[k]
        second, next_ts = b"", 0.0
        while not stop.is_set():
            now = loop.time()
            if now >= next_ts:
                second = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
                next_ts = now + 1
            due = first + (int((now - t0) * rate) if rate is not None else 500 + self.sent[k] - first)
            i = self.sent[k]
            while i < due and not stop.is_set():
                device = devices[i % len(devices)]
                await pool.publish(device, f"{PREFIX}/devices/{device}/events",
                                   b'{"id":"m%d-%d","ts":"%s.%06dZ","type":"motion","data":{"room":"hall"}}'
                                   % (k, i, second, i % 1_000_000))
                i += 1
                self.sent[k] = i
            await asyncio.sleep(0.01 if rate is not None else 0)

    def close(self) -> None:
        for pool in self.pools:
            with contextlib.suppress(Exception):
                self.loop.run(pool.close(offline=False, timeout_s=0), 10)
        self.loop.stop()


# --- Alarm presses ------------------------------------------------------------------------------


@dataclass
class Press:
    event_id: str
    device_id: str
    resident_id: str
    sent: float  # perf_counter() when its bytes first went out
    acked: bool = False


class Presser:
    """Alarm units pressing `alarm.button` (QoS 1) through one MQTT connection to a NATS
    node, written on the socket as a device's firmware does. When the node is lost the
    connection moves to the next node and every press not yet acknowledged is sent again
    (the same event id: Trygg keeps it once)."""

    def __init__(self, mqtt: Sequence[tuple[str, int]], first_node: int = 0) -> None:
        self.mqtt = list(mqtt)
        self.node = first_node % len(mqtt)
        self.presses: dict[str, Press] = {}
        self._unacked: dict[int, tuple[bytes, str]] = {}  # mid → (packet, event id)
        self._mid = 0
        self._lock = threading.Lock()
        self._closed = False
        self._attempt = 0
        self._sock: socket.socket | None = None
        self._connect()
        self._reader = threading.Thread(target=self._read, name="presser", daemon=True)
        self._reader.start()

    def _connect(self) -> None:
        """Connect to the current node, or the next ones in turn, until one accepts."""
        while not self._closed:
            host, port = self.mqtt[self.node]
            self._attempt += 1
            sock = None
            try:
                sock = socket.create_connection((host, port), timeout=2)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(connect_packet(f"presser-{os.getpid()}-{self._attempt}", Protocol.V311, 0, None, None,
                                            0, 0, clean=True))
                connack = sock.recv(4)
                if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
                    raise OSError(f"refused: {connack!r}")
                sock.settimeout(None)
            except OSError:
                if sock is not None:
                    sock.close()
                self.node = (self.node + 1) % len(self.mqtt)
                time.sleep(0.1)
                continue
            with self._lock:
                self._sock = sock
                for packet, _ in self._unacked.values():  # again, with the DUP flag
                    with contextlib.suppress(OSError):
                        sock.sendall(bytes([packet[0] | 0x08]) + packet[1:])
            return

    def _read(self) -> None:
        buffer = bytearray()
        while not self._closed:
            sock = self._sock
            try:
                data = sock.recv(1 << 16) if sock is not None else b""
            except OSError:
                data = b""
            if not data:
                if sock is not None:
                    sock.close()
                if self._closed:
                    return
                with self._lock:
                    self._sock = None
                buffer.clear()
                self.node = (self.node + 1) % len(self.mqtt)
                self._connect()
                continue
            buffer += data
            _, others, used = parse_packets(buffer, Protocol.V311)
            del buffer[:used]
            with self._lock:
                for first, body in others:
                    if first >> 4 == 4 and len(body) >= 2:  # PUBACK
                        entry = self._unacked.pop(int.from_bytes(body[:2], "big"), None)
                        if entry is not None:
                            self.presses[entry[1]].acked = True

    def press(self, device_id: str, resident_id: str, event_id: str) -> Press:
        payload = json.dumps({"id": event_id, "ts": datetime.now(UTC).isoformat(), "type": "alarm.button"}).encode()
        with self._lock:
            self._mid = self._mid % 65535 + 1
            while self._mid in self._unacked:
                self._mid = self._mid % 65535 + 1
            packet = publish_packet(f"{PREFIX}/devices/{device_id}/events", payload, self._mid, Protocol.V311)
            self._unacked[self._mid] = (packet, event_id)
            press = self.presses[event_id] = Press(event_id, device_id, resident_id, time.perf_counter())
            if self._sock is not None:
                with contextlib.suppress(OSError):  # lost: the reader reconnects and sends it again
                    self._sock.sendall(packet)
        return press

    def unacked(self) -> int:
        with self._lock:
            return len(self._unacked)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendall(b"\xe0\x00")
                    self._sock.close()


@dataclass
class Pressers:
    """The pressing residents, each pressed once, picked by partition when asked."""

    count: int
    presser: Presser
    used: set[int] = field(default_factory=set)
    seq: int = 0

    def next(self, partition: int | None = None) -> int:
        for i in range(self.count):
            if i not in self.used and (partition is None or resident_partition(presser_resident(i)) == partition):
                self.used.add(i)
                return i
        raise RuntimeError(f"no unpressed resident left (partition {partition})")

    def press(self, partition: int | None = None, tag: str = "p") -> Press:
        i = self.next(partition)
        self.seq += 1
        return self.presser.press(presser_device(i), presser_resident(i), f"{tag}-{self.seq}")


# --- Staff handhelds ------------------------------------------------------------------------------


class Handheld:
    """A staff handheld in a process of its own, subscribed to `filters` on node
    `first_node`, moving to the next node when its node dies (and receiving the retained
    unresolved alerts again there). `first[event_id]` is when an alert naming that
    event (its trigger or last event) first arrived; `alert_ids[event_id]` every alert id
    whose trigger was that event; `escalated` the alert ids seen escalated."""

    def __init__(self, mqtt: Sequence[tuple[str, int]], filters: Sequence[str], *, first_node: int = 0,
                 name: str = "staff") -> None:
        ports = ",".join(str(p) for _, p in mqtt)
        self.first: dict[str, float] = {}
        self.alert_ids: dict[str, set[str]] = {}
        self.escalated: set[str] = set()
        self.reconnects = 0  # after the first connection
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), "handheld", ports, str(first_node), name,
                                      *filters], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        while line.startswith("connected"):
            line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the handheld {name} did not subscribe ({line!r})")
        self._reader = threading.Thread(target=self._read, name=f"handheld-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["connected"]:
                self.reconnects += 1
                continue
            if len(parts) != 6:
                continue
            trigger, last, alert_id, _state, level, at = parts
            with self.lock:
                for event_id in {trigger, last}:
                    self.first.setdefault(event_id, float(at))
                self.alert_ids.setdefault(trigger, set()).add(alert_id)
                if int(level) > 0:
                    self.escalated.add(alert_id)

    def delivered(self, event_id: str) -> float | None:
        with self.lock:
            return self.first.get(event_id)

    def wait(self, event_ids: Iterable[str], timeout_s: float) -> list[str]:
        """Until every event has an alert here; the ones still missing."""
        pending = list(event_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [e for e in pending if self.delivered(e) is None]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(5)  # it reads to the end of the output
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_handheld(ports: list[int], first_node: int, name: str, filters: list[str]) -> None:
    """The handheld process: prints `ready` once first subscribed, `connected N` after
    each (re)connection, and per alert change `TRIGGER_EVENT LAST_EVENT ALERT_ID STATE
    LEVEL SECONDS` (perf_counter() when its bytes arrived, comparable across processes)."""
    node, attempt, ready = first_node % len(ports), 0, False
    while True:
        attempt += 1
        try:
            sock = socket.create_connection((HOST, ports[node]), timeout=2)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(connect_packet(f"{name}-{os.getpid()}-{attempt}", Protocol.V311, 0, None, None, 0, 0,
                                        clean=True) + subscribe_packet(1, filters, Protocol.V311))
            sock.settimeout(None)
        except OSError:
            node = (node + 1) % len(ports)
            time.sleep(0.1)
            continue
        print(f"connected {ports[node]}", flush=True)
        buffer = bytearray()
        try:
            while data := sock.recv(1 << 16):
                at = time.perf_counter()
                buffer += data
                messages, others, used = parse_packets(buffer, Protocol.V311)
                del buffer[:used]
                for first, body in others:
                    if first >> 4 == 9:  # SUBACK: refused while the node's streams have no leader
                        if any(code & 0x80 for code in parse_suback(body, Protocol.V311)[1]):
                            raise OSError("subscription refused")
                        if not ready:
                            ready = True
                            print("ready", flush=True)
                acks = [m.mid for m in messages if m.qos]
                if acks:
                    sock.sendall(puback_packets(acks))
                for message in messages:
                    if not message.payload:
                        continue  # a cleared retained alert
                    alert = json.loads(message.payload)
                    trigger = (alert.get("trigger") or {}).get("event_id", "-")
                    last = (alert.get("last_event") or {}).get("event_id", "-")
                    sys.stdout.write(f"{trigger} {last} {alert['alert_id']} {alert['state']} "
                                     f"{alert.get('escalation_level', 0)} {at:.7f}\n")
                sys.stdout.flush()
        except OSError:
            pass
        finally:
            sock.close()
        node = (node + 1) % len(ports)
        time.sleep(0.1)


# --- What PostgreSQL holds ------------------------------------------------------------------------


@dataclass
class Stored:
    fleet_rows: int
    fleet_distinct: int
    press_rows: int
    press_distinct: int
    alerts_per_press: dict[str, int]  # the press's event id → alarm alerts it opened
    offline_alerts: int  # device_offline alerts of the publishing fleet


def stored_counts(database_url: str) -> Stored:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        def one(query: str) -> tuple[int, int]:
            row = conn.execute(query.encode()).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        fleet = one("SELECT count(*), count(DISTINCT (device_id, event_id)) FROM trygg.events "
                    "WHERE device_id LIKE 'fd-%'")
        press = one("SELECT count(*), count(DISTINCT (device_id, event_id)) FROM trygg.events "
                    "WHERE device_id LIKE 'pd-%'")
        per = {str(event): int(n) for event, n in conn.execute(
            "SELECT trigger->>'event_id', count(*) FROM trygg.alerts WHERE kind = 'alarm' GROUP BY 1").fetchall()}
        offline = conn.execute("SELECT count(*) FROM trygg.alerts WHERE kind = 'device_offline' "
                               "AND device_id LIKE 'fd-%'").fetchone()
        assert offline is not None
    return Stored(fleet[0], fleet[1], press[0], press[1], per, int(offline[0]))


def wait_stored(database_url: str, fleet: int, presses: int, timeout_s: float,
                progress: Callable[[Stored], None] | None = None) -> Stored:
    """Until PostgreSQL holds `fleet` distinct fleet events and `presses` distinct presses."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            counts = stored_counts(database_url)
        except psycopg.OperationalError:
            counts = None
        if counts is not None:
            if counts.fleet_distinct >= fleet and counts.press_distinct >= presses:
                return counts
            if progress is not None:
                progress(counts)
        if time.monotonic() > deadline:
            if counts is None:
                counts = stored_counts(database_url)
            return counts
        time.sleep(1.0)


if __name__ == "__main__":
    if sys.argv[1:2] != ["handheld"]:
        sys.exit("usage: python bench/_fleet.py handheld PORTS FIRST_NODE NAME FILTER...")
    ports, first, name, *filters = sys.argv[2:]
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        run_handheld([int(p) for p in ports.split(",")], int(first), name, filters)
