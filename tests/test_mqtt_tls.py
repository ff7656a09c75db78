"""Trygg's MQTT connections over TLS, to a real Mosquitto running the shipped
configuration with its TLS listener switched on (docs/operators.md "TLS").

The certificates are made here with Debian's `openssl`: a CA, a server certificate for
127.0.0.1 signed by it, and a second CA that signed nothing Trygg sees. Trygg's real
ingest `Subscriber`, alert publisher and alarm watch connect with the settings an
operator sets (TRYGG_MQTT_URL=mqtts://..., TRYGG_MQTT_CA_FILE).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from alerts.publisher import AlertPublisher
from composition.runtime import resolve_broker
from gateway.alarm_watch import AlarmWatch
from mqtt import BrokerUnavailable, LoopThread, Message, Protocol, Subscriber
from tests.fix_alerts import an_alert
from tests.fix_deploy import MOSQUITTO_DIR, Accounts, Broker, compose, free_port, running_broker, write_passwd
from trygg.errors import SettingsError
from trygg.settings import load_settings

pytestmark = pytest.mark.integration

PASSWORD = secrets.token_urlsafe(18)
TRYGG = ("trygg-gateway", "trygg-gateway-watch", "trygg-alerts", "trygg-processors-out")


@dataclass
class Pki:
    ca: Path
    wrong_ca: Path
    server_crt: Path
    server_key: Path


def openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl not found: apt-get install openssl", pytrace=False)
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="trygg-pki-") as tmp:
        folder = Path(tmp)
        make_ca(folder, "test-ca")
        make_ca(folder, "wrong-ca")
        (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", "server.key", "-out", "server.csr", cwd=folder)
        openssl("x509", "-req", "-in", "server.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=folder)
        yield Pki(folder / "test-ca.crt", folder / "wrong-ca.crt", folder / "server.crt", folder / "server.key")


@dataclass
class TlsBroker:
    broker: Broker
    tls_port: int
    accounts: Accounts


def enable_tls(pki: Pki, port: int):  # type: ignore[no-untyped-def]
    """Switch on the TLS listener of the shipped mosquitto.conf, as docs/operators.md says."""

    def edit(conf: str, folder: Path) -> str:
        (folder / "tls").mkdir()
        shutil.copy(pki.server_crt, folder / "tls" / "server.crt")
        shutil.copy(pki.server_key, folder / "tls" / "server.key")
        lines = []
        for line in conf.splitlines():
            if line.startswith("#listener 8883"):
                line = f"listener {port} 127.0.0.1"
            elif line.startswith(("#use_username_as_clientid", "#certfile", "#keyfile", "#tls_version")):
                line = line[1:].replace("/mosquitto/auth/tls", str(folder / "tls"))
            lines.append(line)
        text = "\n".join(lines) + "\n"
        assert f"listener {port} 127.0.0.1" in text and "certfile" in text, "the TLS block moved"
        return text

    return edit


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[TlsBroker]:
    accounts = Accounts({**dict.fromkeys(TRYGG, PASSWORD), "d-1": secrets.token_urlsafe(18),
                         "staff-east": secrets.token_urlsafe(18)})
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        passwd = Path(tmp) / "passwd"
        write_passwd(passwd, accounts)
        with running_broker(passwd, enable_tls(pki, port)) as broker:
            yield TlsBroker(broker, port, accounts)


def url(tls: TlsBroker) -> str:
    return f"mqtts://trygg:{PASSWORD}@127.0.0.1:{tls.tls_port}"


def paho_client(tls: TlsBroker, username: str, ca: Path) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(username, tls.accounts.passwords[username])
    client.tls_set(ca_certs=str(ca))
    return client


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as running:
        yield running


def test_trygg_receives_events_and_publishes_alerts_over_tls(tls_broker: TlsBroker, pki: Pki,
                                                             loop_thread: LoopThread) -> None:
    settings = load_settings(mqtt_url=url(tls_broker), mqtt_ca_file=pki.ca)
    broker = resolve_broker(settings)
    assert str(broker.address).startswith("mqtts://") and broker.address.tls is not None

    # Ingest: the persistent session, logged in as trygg-gateway.
    received: queue.Queue[bytes] = queue.Queue()
    gateway = broker.address.account("gateway")

    def on_messages(messages: list[Message], generation: int) -> None:
        for m in messages:
            received.put(m.payload)
        subscriber.ack([m.mid for m in messages if m.qos], generation)

    subscriber = Subscriber(gateway, gateway.client_id("unused"), ["trygg/v1/devices/+/events"], on_messages,
                            protocol=Protocol.V5)
    entered = contextlib.AsyncExitStack()
    loop_thread.run(entered.enter_async_context(subscriber))
    device = paho_client(tls_broker, "d-1", pki.ca)
    device.connect("127.0.0.1", tls_broker.tls_port)
    device.loop_start()
    staff: queue.Queue[bytes] = queue.Queue()
    handheld = paho_client(tls_broker, "staff-east", pki.ca)
    handheld.on_message = lambda c, u, m: staff.put(m.payload)
    handheld.on_connect = lambda c, u, f, rc, p: c.subscribe("trygg/v1/teams/east/alerts/+", qos=1)
    handheld.connect("127.0.0.1", tls_broker.tls_port)
    handheld.loop_start()
    try:
        event = f'{{"id": "e-{secrets.token_hex(6)}", "type": "alarm.pressed"}}'.encode()
        device.publish("trygg/v1/devices/d-1/events", event, qos=1).wait_for_publish(5)
        assert received.get(timeout=5) == event
        assert subscriber.url.startswith("mqtts://")

        # The alert publisher, logged in as trygg-alerts, reaches the handheld.
        alerts = broker.address.account("alerts")
        publisher = AlertPublisher(alerts.host, alerts.port, client_id=alerts.client_id("unused"),
                                   username=alerts.username, password=alerts.password, tls=alerts.tls)
        loop_thread.call(publisher.start)
        change = an_alert()
        loop_thread.call(lambda: publisher.publish(change))
        assert publisher.connected.wait(5)
        payload = staff.get(timeout=5)
        assert change.alert.alert_id.encode() in payload
        assert loop_thread.run(publisher.flush(5))
        publisher.stop()

        # The alarm watch, logged in as trygg-gateway-watch, subscribes over TLS too.
        watch_account = gateway.account("watch")
        watch = AlarmWatch(watch_account, watch_account.client_id("unused"), "trygg/v1/devices/+/events",
                           lambda m: None, protocol=Protocol.V5)

        async def watch_subscribes() -> None:
            async with watch:
                assert await asyncio.to_thread(watch.subscribed.wait, 5)

        loop_thread.run(watch_subscribes(), 10)
    finally:
        loop_thread.run(entered.aclose())
        for client in (device, handheld):
            client.disconnect()
            client.loop_stop()


def test_a_broker_certificate_from_another_ca_is_refused_in_one_line(tls_broker: TlsBroker, pki: Pki) -> None:
    broker = resolve_broker(load_settings(mqtt_url=url(tls_broker), mqtt_ca_file=pki.wrong_ca))
    gateway = broker.address.account("gateway")
    subscriber = Subscriber(gateway, "trygg-gateway", ["trygg/v1/devices/+/events"],
                            lambda messages, generation: None, protocol=Protocol.V5)

    async def enter() -> None:
        async with subscriber:
            pass

    with pytest.raises(BrokerUnavailable) as refused:
        asyncio.run(enter())
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"cannot connect to MQTT broker mqtts://127.0.0.1:{tls_broker.tls_port}: ")
    assert "certificate" in message and "TRYGG_MQTT_CA_FILE" in message


def test_a_stage_run_alone_publishes_over_tls_and_refuses_a_wrong_ca(tls_broker: TlsBroker, pki: Pki) -> None:
    """`trygg processors` publishes its intents with its own client, logged in as
    trygg-processors-out; with a CA that did not sign the broker's certificate it does not
    connect, and says why in one line."""
    from composition.stages import _publisher

    async def publish_one(ca_file: Path) -> None:
        settings = load_settings(mqtt_url=url(tls_broker), mqtt_ca_file=ca_file)
        async with _publisher(settings, resolve_broker(settings), "processors") as out:
            await asyncio.wait_for(out.publish("trygg/v1/internal/intents", b"{}", qos=1), 5)  # PUBACK

    asyncio.run(publish_one(pki.ca))
    with pytest.raises(BrokerUnavailable, match="certificate was refused") as refused:
        asyncio.run(publish_one(pki.wrong_ca))
    assert "\n" not in str(refused.value)


def test_trygg_gateway_will_not_start_with_a_wrong_ca(tls_broker: TlsBroker, pki: Pki, database: str,
                                                       tmp_path: Path) -> None:
    """What an operator sees: `trygg gateway` exits 1 with one line naming the cause."""
    env = {**os.environ, "TRYGG_MQTT_URL": url(tls_broker), "TRYGG_MQTT_CA_FILE": str(pki.wrong_ca),
           "TRYGG_DATABASE_URL": database, "TRYGG_DATA_DIR": str(tmp_path), "TRYGG_LOG_FORMAT": "json"}
    run = subprocess.run([sys.executable, "-m", "trygg", "gateway"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("trygg: ")]
    assert "certificate" in line and "TRYGG_MQTT_CA_FILE" in line
    assert "Traceback" not in run.stderr
    assert PASSWORD not in run.stderr + run.stdout


def test_tls_settings_are_checked_before_anything_connects(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TRYGG_MQTT_URL is not mqtts://"):
        load_settings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_ca_file=pki.ca)
    missing = load_settings(mqtt_url="mqtts://127.0.0.1", mqtt_ca_file=tmp_path / "nothing.crt")
    with pytest.raises(SettingsError, match="TRYGG_MQTT_CA_FILE"):
        resolve_broker(missing)
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=r"TRYGG_MQTT_CA_FILE: .*not a usable PEM file"):
        resolve_broker(load_settings(mqtt_url="mqtts://127.0.0.1", mqtt_ca_file=not_pem))
    # mqtts:// without a port is 8883; the password never shows in an error.
    assert resolve_broker(load_settings(mqtt_url="mqtts://u:pw@127.0.0.1")).address.port == 8883
    with pytest.raises(SettingsError) as bad:
        load_settings(mqtt_url="mqtts://u:s3cret-pw@127.0.0.1:99999")
    assert "s3cret-pw" not in str(bad.value)


def test_the_broker_container_gets_the_tls_files_mosquitto_conf_names() -> None:
    """The commented TLS block points where docker-compose.yml copies deploy/mosquitto/tls,
    and nothing there but its README and .gitignore can be committed."""

    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    for name in ("certfile", "keyfile"):
        (line,) = [line for line in conf.splitlines() if line.startswith(f"#{name} ")]
        assert line.split()[1].startswith("/mosquitto/auth/tls/")
    script = compose()["services"]["mosquitto"]["command"][2]
    assert "cp -R /etc/trygg/mosquitto/tls /mosquitto/auth/" in script
    assert "chmod -R go-rwx /mosquitto/auth" in script
    ignored = (MOSQUITTO_DIR / "tls" / ".gitignore").read_text(encoding="utf-8").split()
    assert ignored[ignored.index("*"):] == ["*", "!.gitignore", "!README.md"]
