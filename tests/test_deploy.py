"""The production deployment: docker-compose.yml, the Dockerfile and Mosquitto's files.

No Docker engine runs here, so the compose file and the Dockerfile are checked as
data, while deploy/mosquitto/ (mosquitto.conf, acl, make-passwords) runs in Debian's
real `mosquitto` binary: only the paths that point inside the container and the
listener are rewritten, and real paho-mqtt clients check who may publish and read what.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import pwd
import queue
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
MAKE_PASSWORDS = MOSQUITTO_DIR / "make-passwords"

#: Variables that hold secrets; the compose file may only refer to them.
SECRETS = (
    "POSTGRES_PASSWORD",
    "MQTT_TRYGG_PASSWORD",
    "TRYGG_PSEUDONYM_KEY",
    "TRYGG_SESSION_SECRET",
)

#: Trygg's MQTT accounts, one per connection (deploy/mosquitto/acl, make-passwords).
TRYGG_ACCOUNTS = ("trygg-gateway", "trygg-gateway-watch", "trygg-alerts", "trygg-processors",
                  "trygg-processors-out", "trygg-alerts-in", "trygg-alerts-out")

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


def full_env() -> dict[str, str]:
    return {name: secrets.token_hex(24) for name in SECRETS}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_compose_runs_mosquitto_timescaledb_and_trygg() -> None:
    services = compose()["services"]
    assert set(services) == {"mosquitto", "timescaledb", "trygg"}
    assert "eclipse-mosquitto:2" in services["mosquitto"]["image"]
    assert "timescale/timescaledb" in services["timescaledb"]["image"]
    assert services["trygg"]["build"] in (".", {"context": "."})
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service or name == "trygg", f"{name} has no healthcheck"


def test_trygg_reaches_the_broker_and_the_database_from_dotenv() -> None:
    env = full_env()
    services = compose(env)["services"]
    trygg = services["trygg"]
    settings = environment(trygg)

    mqtt_url = urlsplit(settings["TRYGG_MQTT_URL"])
    assert (mqtt_url.scheme, mqtt_url.hostname, mqtt_url.port) == ("mqtt", "mosquitto", 1883)
    assert (mqtt_url.username, unquote(mqtt_url.password or "")) == (
        "trygg",
        env["MQTT_TRYGG_PASSWORD"],
    )

    db_url = urlsplit(settings["TRYGG_DATABASE_URL"])
    assert (db_url.scheme, db_url.hostname, db_url.port) == ("postgresql", "timescaledb", 5432)
    database = environment(services["timescaledb"])
    assert db_url.username == database["POSTGRES_USER"]
    assert db_url.path == "/" + database["POSTGRES_DB"]
    assert unquote(db_url.password or "") == database["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]

    assert settings["TRYGG_PSEUDONYM_KEY"] == env["TRYGG_PSEUDONYM_KEY"]
    assert settings["TRYGG_SESSION_SECRET"] == env["TRYGG_SESSION_SECRET"]
    assert settings["TRYGG_MQTT_PREFIX"] == "trygg/v1"
    assert settings["TRYGG_HTTP_HOST"] == "0.0.0.0"

    # Trygg starts once both are healthy, keeps its spool on a volume and
    # serves the dashboard on container port 8000.
    assert trygg["depends_on"] == {
        "mosquitto": {"condition": "service_healthy"},
        "timescaledb": {"condition": "service_healthy"},
    }
    volumes = {v.split(":")[1]: v.split(":")[0] for v in trygg["volumes"]}
    assert volumes[settings["TRYGG_DATA_DIR"]] in compose(env)["volumes"]
    assert any(str(port).endswith(":8000") for port in trygg["ports"])
    assert "pg_isready" in services["timescaledb"]["healthcheck"]["test"]


def test_the_broker_container_finds_the_files_mosquitto_conf_names() -> None:
    service = compose()["services"]["mosquitto"]
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    config_dir = next(target for target, source in mounts.items() if source == "./deploy/mosquitto")
    sh, flag, script = service["command"]
    assert (sh, flag) == ("sh", "-c")
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert f"-c {config_dir}/mosquitto.conf" in script

    conf = {
        line.split()[0]: line.split()[1]
        for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    # The password file and the ACL are copied from the read-only mount to where
    # mosquitto.conf expects them, owned by the user Mosquitto drops to.
    for name in ("passwd", "acl"):
        assert f"{config_dir}/{name}" in script
    auth_dir = str(Path(conf["password_file"]).parent)
    assert Path(conf["acl_file"]).parent == Path(auth_dir)
    assert f"chown -R mosquitto:mosquitto {auth_dir}" in script
    assert f"cp {config_dir}/passwd {config_dir}/acl {auth_dir}/" in script
    # Persistence lands in the named volume.
    assert mounts[conf["persistence_location"].rstrip("/")] in compose()["volumes"]


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    env = full_env()
    env[missing] = ""
    with pytest.raises(MissingVariable, match=missing):
        compose(env)


def test_no_secret_is_written_in_the_deployment_files() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
    reference = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")
    for name, service in compose()["services"].items():
        for key, value in environment(service).items():
            if secretish.search(key):
                assert reference.match(value), f"{name}.{key} must be ${{VAR:?message}}"
            if "://" in value and "@" in value:
                userinfo = value.split("://", 1)[1].split("@", 1)[0]
                password = userinfo.partition(":")[2]
                assert reference.match(password), f"{name}.{key} has a literal password"
    # The example .env leaves every secret empty, so compose refuses it as it is.
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert {name: example.get(name) for name in SECRETS} == dict.fromkeys(SECRETS, "")


def test_dockerfile_runs_trygg_up_unprivileged_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert 'pip install --no-cache-dir "uv==' in text
    assert "uv sync --frozen --no-dev" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^CMD \["trygg", "up"\]$', text, re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD (\[.*\])$", text, re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(1) and "python" in healthcheck.group(1)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"]["trygg"] == "composition.cli:app"
    # The build context is an allow-list: no .env, no password file, no local data.
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = [p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")]
    assert not [p for p in allowed if p.startswith((".env", "deploy", ".trygg", ".git"))]
    # ...that still lets in everything the wheel is built from.
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) | {"pyproject.toml", "uv.lock", "README.md"} <= set(allowed)


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


def test_mosquitto_is_installed() -> None:
    require_program("mosquitto")
    require_program("mosquitto_passwd")
    require_program("mosquitto_sub")


@pytest.mark.integration
def test_mosquitto_accepts_the_production_configuration(broker: Broker) -> None:
    assert broker.process.poll() is None
    log = broker.log()
    assert "running" in log
    assert "Error" not in log, log


@pytest.mark.integration
def test_a_device_event_reaches_trygg(connect: Callable[..., Client]) -> None:
    trygg = connect("trygg-gateway")
    assert trygg.subscribe("trygg/v1/devices/+/events").value == 1
    status = "trygg/v1/devices/d-1/status"
    # The device's Last Will on its own status topic is accepted at connect.
    device = connect("d-1", will=(status, b"offline"))
    assert device.accepted

    event = token()
    device.publish("trygg/v1/devices/d-1/events", event)
    (message,) = trygg.received_until(event, linger=0)
    assert message.topic == "trygg/v1/devices/d-1/events"
    assert message.qos == 1

    # And every device's status (Trygg subscribes to both).
    assert trygg.subscribe("trygg/v1/devices/+/status").value == 1
    device.publish(status, b"online", retain=True)
    assert any(m.topic == status for m in trygg.received_until(b"online", linger=0))
    device.publish(status, b"", retain=True)


@pytest.mark.integration
def test_a_device_cannot_publish_as_another_device(connect: Callable[..., Client]) -> None:
    trygg = connect("trygg-gateway")
    trygg.subscribe("trygg/v1/devices/+/events")
    device = connect("d-1", protocol=MQTTProtocolVersion.MQTTv5)

    forged, own = token(), token()
    assert str(device.publish("trygg/v1/devices/d-2/events", forged)) == "Not authorized"
    device.publish("trygg/v1/devices/d-1/events", own)

    # `own` was published after `forged` on the same connection: once it has
    # arrived (plus a second), `forged` would have too.
    payloads = [m.payload for m in trygg.received_until(own)]
    assert forged not in payloads
    assert payloads == [own]


@pytest.mark.integration
def test_a_device_can_neither_raise_alerts_nor_read_other_devices(
    connect: Callable[..., Client],
) -> None:
    staff = connect("staff-east")
    staff.subscribe("trygg/v1/teams/east/alerts/+")
    snoop = connect("d-2")
    snoop.subscribe("trygg/v1/devices/+/events")
    device = connect("d-1")
    trygg = connect("trygg-alerts")

    fake_alert = token()
    device.publish("trygg/v1/teams/east/alerts/a-forged", fake_alert)
    real_alert = token()
    trygg.publish("trygg/v1/teams/east/alerts/a-real", real_alert)
    assert [m.payload for m in staff.received_until(real_alert)] == [real_alert]

    event = token()
    device.publish("trygg/v1/devices/d-1/events", event)
    time.sleep(1)
    assert snoop.messages.empty()


@pytest.mark.integration
def test_anonymous_and_wrong_passwords_are_refused(connect: Callable[..., Client], broker: Broker) -> None:
    anonymous = connect(None)
    assert anonymous.connack is not None and str(anonymous.connack) == "Not authorized"
    wrong = connect("d-1", "not-the-password")
    assert not wrong.accepted
    stranger = connect("d-404", "whatever")
    assert not stranger.accepted


@pytest.mark.integration
def test_staff_receive_their_teams_alerts_only(connect: Callable[..., Client]) -> None:
    trygg = connect("trygg-alerts")
    east = b'{"alert_id": "a-east", "team_id": "east", "state": "open"}'
    centre = b'{"alert_id": "a-centre", "team_id": "alarm-centre", "state": "open"}'
    trygg.publish("trygg/v1/teams/east/alerts/a-east", east, retain=True)
    trygg.publish("trygg/v1/teams/alarm-centre/alerts/a-centre", centre, retain=True)
    try:
        # Unresolved (retained) alerts arrive on connect.
        staff = connect("staff-east")
        staff.subscribe("trygg/v1/teams/alarm-centre/alerts/+")
        staff.subscribe("trygg/v1/teams/east/alerts/+")
        assert [m.payload for m in staff.received_until(east)] == [east]

        centre_staff = connect("staff-alarm-centre")
        centre_staff.subscribe("trygg/v1/teams/alarm-centre/alerts/+")
        assert [m.payload for m in centre_staff.received_until(centre, linger=0)] == [centre]
    finally:
        # Resolved: the retained messages are cleared.
        trygg.publish("trygg/v1/teams/east/alerts/a-east", b"", retain=True)
        trygg.publish("trygg/v1/teams/alarm-centre/alerts/a-centre", b"", retain=True)


@pytest.mark.integration
def test_an_oversized_event_still_reaches_trygg_to_be_dead_lettered(
    connect: Callable[..., Client],
) -> None:
    trygg = connect("trygg-gateway")
    trygg.subscribe("trygg/v1/devices/+/events")
    device = connect("d-1")
    too_big = b"x" * (20 * 1024)
    device.publish("trygg/v1/devices/d-1/events", too_big)
    assert [len(m.payload) for m in trygg.received_until(too_big, linger=0)] == [len(too_big)]


@pytest.mark.integration
def test_the_compose_healthcheck_reports_the_broker_healthy(broker: Broker) -> None:
    require_program("mosquitto_sub")
    test = compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$").replace("-p 1883", f"-p {broker.port}")
    env = {**os.environ, "PATH": SEARCH_PATH}
    assert subprocess.run(["sh", "-c", command], env=env, timeout=10).returncode == 0
    # And unhealthy when nothing listens there.
    down = test[1].replace("-p 1883", f"-p {free_port()}")
    assert subprocess.run(["sh", "-c", down], env=env, timeout=10).returncode != 0


@pytest.mark.integration
def test_make_passwords_creates_credentials_that_log_in(tmp_path: Path) -> None:
    require_program("mosquitto_passwd")
    passwd = tmp_path / "passwd"
    listing = tmp_path / "devices.txt"
    listing.write_text("# fleet\nd-9\n\nstaff-east  chosen-password\n")
    env = {
        **os.environ,
        "PATH": SEARCH_PATH,
        "MQTT_TRYGG_PASSWORD": "trygg-password",
        "ENV_FILE": str(tmp_path / "no.env"),
    }

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MAKE_PASSWORDS), "-o", str(passwd), *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )

    first = make(str(listing))
    (generated,) = [shlex.split(line) for line in first.stdout.splitlines()]
    assert generated[0] == "d-9" and len(generated[1]) >= 20
    assert passwd.stat().st_mode & 0o777 == 0o600
    users = {line.split(":", 1)[0]: line for line in passwd.read_text().splitlines()}
    assert set(users) == {*TRYGG_ACCOUNTS, "d-9", "staff-east"}
    assert all(":$7$" in line for line in users.values()), "passwords are not hashed"

    # Run again: the device keeps its password, nothing new is printed.
    again = make(str(listing))
    assert again.stdout == ""
    assert passwd.read_text().splitlines().count(users["d-9"]) == 1

    with running_broker(passwd) as broker:
        for username, password in [
            ("d-9", generated[1]),
            ("staff-east", "chosen-password"),
            *((account, "trygg-password") for account in TRYGG_ACCOUNTS),
        ]:
            client = Client(broker.port, username, password)
            try:
                assert client.accepted, username
            finally:
                client.close()


#: What docs/operators.md promises a broker crash can lose: the last second.
WINDOW_S = 1.0


@pytest.mark.integration
def test_events_acknowledged_by_the_broker_survive_its_kill_9(accounts: Accounts) -> None:
    """Trygg is stopped, devices keep publishing, the broker is killed with -9: what the
    broker acknowledged more than one autosave interval before the crash is still queued
    for Trygg's persistent session when it comes back (docs/operators.md "Broker
    persistence" says what window remains)."""
    count = 3000
    with tempfile.TemporaryDirectory() as tmp, running_broker(write_passwd(Path(tmp) / "passwd", accounts)) as broker:
        session = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trygg-gateway", clean_session=False,
                              protocol=MQTTProtocolVersion.MQTTv311)
        session.username_pw_set("trygg-gateway", accounts.passwords["trygg-gateway"])
        session.connect("127.0.0.1", broker.port)
        session.loop_start()
        session.subscribe("trygg/v1/devices/+/events", qos=1)
        time.sleep(0.5)
        session.disconnect()
        session.loop_stop()  # Trygg is away: its session queues what devices send

        device = Client(broker.port, "d-1", accounts.passwords["d-1"])
        payloads = [f'{{"id":"e-{n}","type":"heartbeat"}}'.encode() for n in range(count)]
        infos = [device._mqtt.publish("trygg/v1/devices/d-1/events", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
        assert all(info.is_published() for info in infos), "the broker did not acknowledge every event"
        device.close()
        time.sleep(WINDOW_S + 1.0)
        broker.process.kill()
        broker.process.wait()
        restarted = start_mosquitto(broker.folder, broker.port)
        broker.process = restarted.process  # stopped by running_broker

        got: queue.Queue[bytes] = queue.Queue()
        back = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trygg-gateway", clean_session=False,
                           protocol=MQTTProtocolVersion.MQTTv311)
        back.username_pw_set("trygg-gateway", accounts.passwords["trygg-gateway"])
        back.on_message = lambda c, u, m: got.put(m.payload)
        back.connect("127.0.0.1", broker.port)
        back.loop_start()
        received: set[bytes] = set()
        deadline = time.monotonic() + 20
        while len(received) < count and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                received.add(got.get(timeout=0.5))
        back.disconnect()
        back.loop_stop()
    assert len(received) == count, f"{count - len(received)} of {count} acknowledged events lost by the crash"


def test_the_systemd_unit_restarts_trygg_whenever_it_exits() -> None:
    """Trygg exits non-zero when a part that must not end has ended (trygg/watchdog.py):
    the unit must start it again, every time, and stop it with SIGTERM so that what was
    received is made durable first."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "systemd" / "trygg.service")
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["ExecStart"].endswith("trygg up")
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(ROOT / "deploy" / "systemd" / "trygg.service")],
                                capture_output=True, text=True)
        problems = [line for line in verify.stderr.splitlines() if "is not executable" not in line and line]
        assert not problems, verify.stderr
