"""MQTT fixtures: a private Mosquitto with the project's test configuration, a unique
topic prefix per test, and a publisher."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt import BrokerAddress, Client, LoopThread
from tests.helpers import worker_port


def set_nodelay(client: mqtt.Client, userdata: object, sock: object) -> None:  # paho on_socket_open
    """Nagle's algorithm costs ~40 ms stalls on small messages (docs/design-notes.md)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence {persistence}
persistence_location {dir}/
# Trygg's persistent session must not lose queued QoS 1 messages while it is down.
max_queued_messages 0
max_queued_bytes 0
# MQTT 3.1.1 clients (no receive maximum of their own) get this many in flight.
max_inflight_messages {max_inflight}
log_dest file {dir}/mosquitto.log
"""


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port}")


class MosquittoInstance:
    """`max_inflight`: the broker's in-flight limit towards 3.1.1 clients, and the
    receive maximum it gives MQTT 5 clients; `persistence`: sessions and queued messages
    survive a `restart`."""

    def __init__(self, *, max_inflight: int = 1000, persistence: bool = False) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed: run scripts/test, which installs it")
        self.binary = binary
        self.port = worker_port(21883)
        self.dir = Path(tempfile.mkdtemp(prefix="trygg-mosquitto-"))
        self.dir.chmod(0o777)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(MOSQUITTO_CONF.format(port=self.port, dir=self.dir, max_inflight=max_inflight,
                                                  persistence=str(persistence).lower()))
        self.conf.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def halt(self) -> None:
        """Stop the broker (it saves its sessions when it has persistence)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.halt()
        self.start()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoInstance]:
    broker = MosquittoInstance()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of its own per test, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}/trygg/v1"


class Publisher:
    """A device-side client: QoS 1 publishes, waiting for each PUBACK batch."""

    def __init__(self, address: BrokerAddress, client_id: str | None = None,
                 protocol: int = mqtt.MQTTv311) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=protocol)
        self.client.on_socket_open = set_nodelay
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(address.host, address.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_all(self, messages: list[tuple[str, bytes | str]], timeout: float = 60) -> None:
        infos = [self.publish(t, p) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: MosquittoInstance) -> Iterator[Publisher]:
    pub = Publisher(mosquitto.address)
    try:
        yield pub
    finally:
        pub.close()


@contextlib.contextmanager
def running(client: Client, loop_thread: LoopThread | None = None) -> Iterator[LoopThread]:
    """`with running(subscriber) as loop_thread:` the client entered (connected) on a
    loop thread, its own unless given, and left at the end: for tests that are not async."""
    thread = loop_thread or LoopThread("test-mqtt").start()
    entered = contextlib.AsyncExitStack()
    try:
        thread.run(entered.enter_async_context(client), 30)
        yield thread
    finally:
        with contextlib.suppress(Exception):
            thread.run(entered.aclose(), 10)
        if loop_thread is None:
            thread.stop()
