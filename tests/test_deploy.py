"""The production deployment: docker-compose.yml, the Dockerfile and Mosquitto's files.

No Docker engine runs here, so the compose file and the Dockerfile are checked as
data, while deploy/mosquitto/ (mosquitto.conf, acl, make-passwords) runs in Debian's
real `mosquitto` binary: only the paths that point inside the container and the
listener are rewritten, and real paho-mqtt clients check who may publish and read what
(the harness is tests/fix_deploy.py).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import queue
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.fix_deploy import (
    MOSQUITTO_DIR,
    ROOT,
    SEARCH_PATH,
    Accounts,
    Broker,
    Client,
    MissingVariable,
    compose,
    free_port,
    require_program,
    running_broker,
    start_mosquitto,
    token,
    write_passwd,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
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
