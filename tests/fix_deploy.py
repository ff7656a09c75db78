"""The shipped deployment as tests run it: docker-compose.yml read as `docker compose`
reads it, and deploy/mosquitto/ (mosquitto.conf, acl, passwords) run by Debian's real
`mosquitto` binary, with only the container paths and the listener rewritten, for real
paho-mqtt clients (`Client`) to check who may publish and read what.

Fixtures `accounts` and `broker` (one of each per test module) and `connect`."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"

#: Debian installs the broker in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
INSTALL_HINT = "install Debian's broker: apt-get install mosquitto mosquitto-clients"


def require_program(name: str) -> str:
    """The path of a Mosquitto program; a missing one fails the test (never skips it)."""
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        pytest.fail(f"`{name}` not found on PATH or in /usr/sbin: {INSTALL_HINT}", pytrace=False)
    return path

# --- docker-compose.yml --------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, as `docker compose` does."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else value  # type: ignore[return-value]
        if op in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return value  # type: ignore[return-value]
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolate_values(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: _interpolate_values(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_values(item, env) for item in node]
    return node


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose would run it with this .env (raw when env is None).

    Like compose, interpolate the parsed values, not the text (comments stay as they are).
    """
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document if env is None else _interpolate_values(document, env)  # type: ignore[return-value]



# --- A real Mosquitto with the production configuration ----------------------------


@dataclass
class Broker:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        parts = []
        for name in ("mosquitto.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.folder / name).read_text(errors="replace"))
        return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rewrite_config(text: str, folder: Path, port: int) -> str:
    """Point the container paths into `folder` and the one listener at 127.0.0.1:port."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "persistence_location": f"persistence_location {folder / 'data'}/",
        "password_file": f"password_file {folder / 'passwd'}",
        "acl_file": f"acl_file {folder / 'acl'}",
        "log_dest": f"log_dest file {folder / 'mosquitto.log'}",
    }
    lines, seen = [], []
    for line in text.splitlines():
        words = line.split()
        key = words[0] if words and not line.startswith("#") else ""
        if key in replacements:
            if key in seen:
                assert key == "log_dest", f"the test expects one `{key}` line"
                continue
            seen.append(key)
            line = replacements[key]
        lines.append(line)
    assert sorted(seen) == sorted(replacements), "mosquitto.conf lost a line the test rewrites"
    return "\n".join(lines) + "\n"


def hand_to_mosquitto_user(folder: Path) -> None:
    """Started as root, Mosquitto drops to user `mosquitto` before it reads the password
    file and the ACL; give it the folder, as docker-compose.yml does in the container."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:  # it falls back to `nobody`: make the files readable instead
        folder.chmod(0o777)
        for path in folder.rglob("*"):
            path.chmod(0o777 if path.is_dir() else 0o644)
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)


def start_mosquitto(folder: Path, port: int) -> Broker:
    """Run the rewritten configuration in `folder`; returns once it listens."""
    mosquitto = require_program("mosquitto")
    with (folder / "stderr.log").open("ab") as stderr:
        process = subprocess.Popen(
            [mosquitto, "-c", str(folder / "mosquitto.conf")], stdin=subprocess.DEVNULL,
            stdout=stderr, stderr=stderr,
        )
    broker = Broker(port, folder, process)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            pytest.fail(f"mosquitto rejected the configuration:\n{broker.log()}", pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return broker
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto never listened:\n{broker.log()}", pytrace=False)
            time.sleep(0.05)


def stop_mosquitto(broker: Broker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()


@contextlib.contextmanager
def running_broker(passwd: Path, edit: Callable[[str, Path], str] | None = None) -> Iterator[Broker]:
    """deploy/mosquitto/* in a fresh folder with `passwd`, run by the real binary. The
    broker yielded may be killed and replaced (`start_mosquitto` on its folder and port);
    whichever runs at the end is stopped. `edit(conf, folder)` may change the rewritten
    mosquitto.conf (and put files into the folder) before the broker starts."""
    require_program("mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="trygg-deploy-test-"))
    broker = None
    try:
        for path in MOSQUITTO_DIR.iterdir():
            if path.is_file() and path.name != "passwd":
                shutil.copy(path, folder / path.name)
        shutil.copy(passwd, folder / "passwd")
        (folder / "passwd").chmod(0o600)
        (folder / "acl").chmod(0o600)
        (folder / "data").mkdir(mode=0o700)
        port = free_port()
        conf = folder / "mosquitto.conf"
        text = rewrite_config(conf.read_text(encoding="utf-8"), folder, port)
        conf.write_text(edit(text, folder) if edit is not None else text)
        hand_to_mosquitto_user(folder)
        broker = start_mosquitto(folder, port)
        yield broker
    finally:
        if broker is not None:
            stop_mosquitto(broker)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Accounts:
    passwords: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def accounts() -> Accounts:
    names = ["trygg-gateway", "trygg-gateway-watch", "trygg-alerts", "d-1", "d-2", "staff-east",
             "staff-alarm-centre"]
    return Accounts({name: secrets.token_urlsafe(18) for name in names})


def write_passwd(path: Path, accounts: Accounts) -> Path:
    """A Mosquitto password file with every account, made by the real mosquitto_passwd."""
    passwd_tool = require_program("mosquitto_passwd")
    create = ["-c"]
    for user, password in accounts.passwords.items():
        subprocess.run([passwd_tool, *create, "-b", str(path), user, password], check=True)
        create = []
    return path


@pytest.fixture(scope="module")
def broker(accounts: Accounts) -> Iterator[Broker]:
    with tempfile.TemporaryDirectory() as tmp, running_broker(write_passwd(Path(tmp) / "passwd", accounts)) as running:
        yield running


class Client:
    """A paho-mqtt 2.x client on its own network thread, recording what arrives."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None = None,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: dict[int, ReasonCode] = {}
        self._connected = threading.Event()
        self._subscribed: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.connack: ReasonCode | None = None
        self._mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{secrets.token_hex(6)}",
            protocol=protocol,
            reconnect_on_failure=False,
        )
        if username is not None:
            self._mqtt.username_pw_set(username, password)
        if will is not None:
            self._mqtt.will_set(will[0], will[1], qos=1, retain=True)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_subscribe = lambda c, u, mid, codes, props: self._subscribed.put(codes)
        self._mqtt.on_message = lambda c, u, message: self.messages.put(message)
        self._mqtt.on_publish = self._on_publish
        self._mqtt.connect("127.0.0.1", port, keepalive=30)
        self._mqtt.loop_start()
        assert self._connected.wait(5), "no CONNACK within 5 s"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.connack = reason_code
        self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.acks[mid] = reason_code

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> ReasonCode:
        self._mqtt.subscribe(topic, qos=1)
        (code,) = self._subscribed.get(timeout=5)
        return code

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish with QoS 1 and wait for the PUBACK; its reason code (MQTT 5) is returned."""
        info = self._mqtt.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"no PUBACK for {topic}"
        deadline = time.monotonic() + 1
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.acks[info.mid]

    def received_until(self, last: bytes, *, linger: float = 1.0) -> list[mqtt.MQTTMessage]:
        """Everything received until `last` arrives, plus `linger` seconds more."""
        got: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + 5
        while not any(m.payload == last for m in got):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{last!r} never arrived; got {[m.payload[:40] for m in got]}")
            with contextlib.suppress(queue.Empty):
                got.append(self.messages.get(timeout=remaining))
        time.sleep(linger)
        while not self.messages.empty():
            got.append(self.messages.get_nowait())
        return got

    def close(self) -> None:
        self._mqtt.disconnect()
        self._mqtt.loop_stop()


@pytest.fixture
def connect(broker: Broker, accounts: Accounts) -> Iterator[Callable[..., Client]]:
    """connect(username, password=<its own>, **options) -> a connected Client."""
    opened: list[Client] = []

    def _connect(username: str | None, password: str | None = None, **options: object) -> Client:
        if username is not None and password is None:
            password = accounts.passwords[username]
        client = Client(broker.port, username, password, **options)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        client.close()


def token() -> bytes:
    return f'{{"id": "e-{secrets.token_hex(8)}", "type": "heartbeat"}}'.encode()
