"""Who may be whom on the shipped broker (issue 14, docs/security.md "Broker and devices").

Debian's real Mosquitto runs deploy/mosquitto/ (the harness of tests/fix_deploy.py);
Trygg's side is its real ingest `Subscriber` logged in as `trygg-gateway`, and devices
and handhelds are paho clients.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqtt import BrokerAddress, Message, Protocol, Subscriber
from tests.fix_deploy import Accounts, Broker, Client, running_broker, write_passwd
from tests.fix_mqtt import running

pytestmark = pytest.mark.integration

EVENTS = "trygg/v1/devices/+/events"


def old_config(conf: str, folder: Path) -> str:
    """The configuration as shipped before issue 14: client ids not bound to usernames."""
    return re.sub(r"^use_username_as_clientid true$", "#use_username_as_clientid true", conf, flags=re.MULTILINE)


@dataclass
class Ingest:
    """Trygg's ingest session: what it stored (acknowledged) and how often it was cut off."""

    subscriber: Subscriber
    stored: set[bytes] = field(default_factory=set)
    drops: list[str] = field(default_factory=list)


@contextlib.contextmanager
def trygg_ingest(port: int, password: str) -> Iterator[Ingest]:
    lock = threading.Lock()

    def on_messages(messages: list[Message], generation: int) -> None:
        with lock:
            ingest.stored.update(m.payload for m in messages)
        ingest.subscriber.ack([m.mid for m in messages if m.qos], generation)

    def on_state(up: bool, why: str) -> None:
        if not up:
            ingest.drops.append(why)

    subscriber = Subscriber(BrokerAddress("127.0.0.1", port, "trygg-gateway", password), "trygg-gateway", [EVENTS],
                            on_messages, protocol=Protocol.V5, on_state=on_state)
    ingest = Ingest(subscriber)
    with running(subscriber):
        yield ingest


def take_over(port: int, username: str, password: str, client_id: str, stop: threading.Event,
              attempts: list[bool]) -> None:
    """A device that connects again and again with Trygg's client id and a persistent
    session, as the one seen in issue 14 did (11 times in 20 s)."""
    while not stop.is_set():
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=MQTTProtocolVersion.MQTTv311)
        client.username_pw_set(username, password)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p, done=connected: (attempts.append(not rc.is_failure), done.set())
        try:
            client.connect("127.0.0.1", port)
        except OSError:
            continue
        client.loop_start()
        connected.wait(2)
        time.sleep(0.25)
        client.disconnect()
        client.loop_stop()
        stop.wait(0.1)


def publish_during_takeovers(broker: Broker, accounts: Accounts, impostor_ids: list[str], count: int = 600,
                             impostor: tuple[str, str] | None = None) -> tuple[Ingest, list[bytes], list[bool]]:
    """d-2 publishes `count` events (each acknowledged by the broker) while d-1 tries to
    take over Trygg's session with each of `impostor_ids` (or `impostor`: username and
    password); returns once Trygg has all of them or has had 10 s more."""
    username, password = impostor or ("d-1", accounts.passwords["d-1"])
    payloads = [f'{{"id": "e-{n}-{secrets.token_hex(4)}", "type": "heartbeat"}}'.encode() for n in range(count)]
    attempts: list[bool] = []
    with trygg_ingest(broker.port, accounts.passwords["trygg-gateway"]) as ingest:
        device = Client(broker.port, "d-2", accounts.passwords["d-2"])
        stop = threading.Event()
        threads = [threading.Thread(target=take_over, args=(broker.port, username, password, cid,
                                                             stop, attempts), daemon=True)
                   for cid in impostor_ids]
        for thread in threads:
            thread.start()
        try:
            for payload in payloads:
                info = device._mqtt.publish("trygg/v1/devices/d-2/events", payload, qos=1)
                info.wait_for_publish(5)
                assert info.is_published(), "the broker did not acknowledge an event"
                time.sleep(0.005)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            device.close()
        deadline = time.monotonic() + 10
        while len(ingest.stored) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return ingest, payloads, attempts


def test_on_the_old_configuration_a_device_takes_over_trygg_and_events_are_lost(accounts: Accounts) -> None:
    """Before the fix: the same test on the configuration without use_username_as_clientid
    loses acknowledged events, as seen in issue 14."""
    with tempfile.TemporaryDirectory() as tmp:
        passwd = Path(tmp) / "passwd"
        write_passwd(passwd, accounts)
        with running_broker(passwd, old_config) as old:
            ingest, payloads, attempts = publish_during_takeovers(old, accounts, ["trygg-gateway"])
    lost = len(set(payloads) - ingest.stored)
    assert any(attempts), "the impostor never got in"
    assert ingest.drops, "Trygg's session was never taken over"
    assert lost > 0, "nothing was lost: the test would not notice a takeover"


def test_no_device_can_take_over_trygg_and_nothing_is_lost(broker: Broker, accounts: Accounts) -> None:
    ingest, payloads, attempts = publish_during_takeovers(broker, accounts, ["trygg-gateway", "trygg"])
    assert attempts, "the impostor never tried"
    missing = set(payloads) - ingest.stored
    assert not missing, f"{len(missing)} of {len(payloads)} acknowledged events never reached Trygg"
    assert ingest.drops == [], f"Trygg's session was cut off: {ingest.drops}"


def test_a_wrong_password_in_tryggs_name_disturbs_nothing(broker: Broker, accounts: Accounts) -> None:
    """The broker refuses the password before it looks at sessions: Trygg's stays whole."""
    ingest, payloads, attempts = publish_during_takeovers(broker, accounts, ["trygg-gateway"], count=300,
                                                          impostor=("trygg-gateway", accounts.passwords["d-1"]))
    assert attempts and not any(attempts), "the impostor got in"
    assert not set(payloads) - ingest.stored
    assert ingest.drops == []


def test_a_device_may_not_log_in_as_trygg(broker: Broker, accounts: Accounts) -> None:
    """The device's own password does not open Trygg's account, whatever client id it sends."""
    impostor = Client(broker.port, "trygg-gateway", accounts.passwords["d-1"])
    try:
        assert not impostor.accepted
    finally:
        impostor.close()


def test_a_handheld_can_publish_nothing(connect: Callable[..., Client]) -> None:
    """staff-east's handheld may read its team's alerts and nothing else: no events in
    its own name (the device patterns apply to every user), none in a device's, no alert."""
    trygg = connect("trygg-gateway")
    trygg.subscribe(EVENTS)
    trygg.subscribe("trygg/v1/devices/+/status")
    staff_east = connect("staff-east", protocol=MQTTProtocolVersion.MQTTv5)
    watcher = connect("staff-alarm-centre")
    watcher.subscribe("trygg/v1/teams/east/alerts/+")

    refused = {
        "trygg/v1/devices/staff-east/events": token(),
        "trygg/v1/devices/staff-east/status": token(),
        "trygg/v1/devices/d-1/events": token(),
        "trygg/v1/teams/east/alerts/a-forged": token(),
    }
    for topic, payload in refused.items():
        assert str(staff_east.publish(topic, payload)) == "Not authorized", topic

    # The device's own event, published after the handheld's, arrives alone.
    device = connect("d-1")
    own = token()
    device.publish("trygg/v1/devices/d-1/events", own)
    assert [m.payload for m in trygg.received_until(own)] == [own]
    assert watcher.messages.empty()


def test_a_handheld_reads_only_its_teams_alerts(connect: Callable[..., Client]) -> None:
    staff_east = connect("staff-east")
    staff_east.subscribe("trygg/v1/teams/alarm-centre/alerts/+")
    staff_east.subscribe(EVENTS)
    staff_east.subscribe("trygg/v1/teams/east/alerts/+")
    alerts = connect("trygg-alerts")
    device = connect("d-1")
    device.publish("trygg/v1/devices/d-1/events", token())
    other = token()
    alerts.publish("trygg/v1/teams/alarm-centre/alerts/a-1", other)
    own = token()
    alerts.publish("trygg/v1/teams/east/alerts/a-2", own)
    assert [m.payload for m in staff_east.received_until(own)] == [own]


def token() -> bytes:
    return f'{{"id": "e-{secrets.token_hex(8)}", "type": "heartbeat"}}'.encode()


def test_each_connection_has_its_own_login_from_the_one_url() -> None:
    """The accounts Trygg's connections use, derived from TRYGG_MQTT_URL (docs/operators.md
    "MQTT accounts"), and the single-login fallback for a broker without them."""
    from composition.runtime import resolve_broker
    from trygg.settings import load_settings

    url = "mqtt://trygg:pw@127.0.0.1:1883"
    address = resolve_broker(load_settings(mqtt_url=url)).address
    gateway = address.account("gateway")
    logins = {role: address.account(role) for role in ("gateway", "alerts", "processors", "alerts-in")}
    assert {r: (a.username, a.password, a.client_id("x")) for r, a in logins.items()} == {
        role: (f"trygg-{role}", "pw", f"trygg-{role}") for role in logins}
    assert gateway.account("watch").username == "trygg-gateway-watch"

    single = resolve_broker(load_settings(mqtt_url=url, mqtt_accounts="single")).address
    assert single.account("gateway").username == "trygg"
    assert single.account("gateway").client_id("trygg-gateway") == "trygg-gateway"
