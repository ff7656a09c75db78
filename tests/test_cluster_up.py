"""`trygg up --cluster`: two instances on a three-node NATS cluster, as an operator runs
them (docs/cluster.md): one alert per alarm on the team topic of any node, every
instance's API and live stream see every owner's alerts, a staff action on any instance
reaches the owner, and an owner killed with kill -9 is taken over within the budget."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import paho.mqtt.client as paho
import psycopg
import pytest

from cluster import Leases, resident_partition
from cluster.layout import rules_lease
from storage import save_registry
from tests.fix_api import EventStream
from tests.fix_cluster import NatsCluster
from tests.fix_up import TryggProcess
from tests.helpers import small_registry, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

PASSWORD = "cluster-test-password-1"


class Handheld:
    """A staff handheld: MQTT 3.1.1 on one node, every alert of team east, by id."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: queue.Queue[tuple[float, str, dict[str, object]]] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"handheld-{port}",
                                  protocol=paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe("trygg/v1/teams/east/alerts/+", qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.payload:
            self.messages.put((time.monotonic(), msg.topic, json.loads(msg.payload)))

    def alerts_until(self, seconds: float) -> list[tuple[float, dict[str, object]]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, _, alert = self.messages.get(timeout=left)
            except queue.Empty:
                break
            out.append((at, alert))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def press(cluster: NatsCluster, node: int, device: str, event_id: str) -> None:
    host, port = cluster.mqtt[node]
    payload = json.dumps({"id": event_id, "type": "alarm.button", "ts": datetime.now(UTC).isoformat(), "data": {}})
    subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-V", "mqttv311",
                    "-t", f"trygg/v1/devices/{device}/events", "-m", payload], check=True, timeout=10)


async def owners(cluster: NatsCluster) -> dict[str, str]:
    nc = await nats.connect(cluster.urls)
    try:
        leases = Leases(nc.jetstream(), "test")
        await leases.open()
        return await leases.owners()
    finally:
        await nc.close()


@pytest.fixture
def instances(nats_cluster: NatsCluster, database: str, tmp_path: Path) -> Iterator[dict[str, TryggProcess]]:
    with psycopg.connect(database) as conn:
        save_registry(conn, small_registry(), actor="test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({
        "TRYGG_DATABASE_URL": database, "TRYGG_CLUSTER_NATS_URLS": ",".join(nats_cluster.urls),
        "TRYGG_CLUSTER_MQTT_URLS": ",".join(f"mqtt://{h}:{p}" for h, p in nats_cluster.mqtt),
        "TRYGG_HTTP_PORT": "0", "TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32,
        "TRYGG_ESCALATE_CRITICAL_S": "2", "TRYGG_ESCALATE_HIGH_S": "3", "TRYGG_LOG_LEVEL": "info",
    })
    subprocess.run([sys.executable, "-m", "trygg", "users", "add", "ola", "--role", "staff", "--team", "east",
                    "--password-stdin"], input=PASSWORD.encode(), env=env, check=True, timeout=60)
    running: dict[str, TryggProcess] = {}
    for name in ("a", "b"):
        running[name] = TryggProcess({**env, "TRYGG_CLUSTER_INSTANCE": name, "TRYGG_DATA_DIR": str(tmp_path / name)},
                                     tmp_path / f"{name}.log", ("--cluster",))
    try:
        yield running
    finally:
        for proc in running.values():  # both asked at once, then waited for
            if proc.proc.poll() is None:
                proc.proc.terminate()
        for proc in running.values():
            proc.stop()


def dashboard_url(proc: TryggProcess) -> str:
    found = re.search(r"dashboard (http://\S+)/", proc.log.read_text())
    assert found, proc.log.read_text()[-2000:]
    return found.group(1)


def token(url: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/api/auth/token", data={"username": "ola", "password": PASSWORD}, timeout=10)
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_two_instances_serve_one_cluster_and_survive_the_owner_being_killed(
        nats_cluster: NatsCluster, instances: dict[str, TryggProcess]) -> None:
    # Both instances share the 32 partitions.
    held = wait_for(lambda: asyncio.run(owners(nats_cluster)),
                    lambda o: sum(1 for k in o if k.startswith(("ingest.", "rules."))) == 32, timeout=60)
    partitions = {k: v for k, v in held.items() if k.startswith(("ingest.", "rules."))}
    assert set(partitions.values()) == {"a", "b"}, partitions
    urls = {name: dashboard_url(proc) for name, proc in instances.items()}
    owner = held[rules_lease(resident_partition("r-1"))]
    other = "b" if owner == "a" else "a"
    handheld = Handheld(*nats_cluster.mqtt[2])
    try:
        # An alarm published on node 2 reaches the handheld on node 3 once.
        press(nats_cluster, 1, "d-1-alarm", "c-1")
        got = handheld.alerts_until(5.0)
        assert len({a["alert_id"] for _, a in got}) == 1, got
        alert_id = str(got[0][1]["alert_id"])
        # Every instance's API has it; the live stream of the instance that does not own
        # the resident sees the acknowledgement made through the owner's API.
        headers = {name: token(url) for name, url in urls.items()}
        for name, url in urls.items():
            listed = httpx.get(f"{url}/api/alerts", headers=headers[name], timeout=10).json()
            assert [a["alert_id"] for a in listed] == [alert_id], (name, listed)
        with httpx.Client(timeout=10) as client, client.stream(
                "GET", f"{urls[other]}/api/alerts/stream", headers=headers[other]) as response:
            events = EventStream(response)
            answer = httpx.post(f"{urls[other]}/api/alerts/{alert_id}/ack", headers=headers[other], timeout=10)
            assert answer.status_code == 200 and answer.json()["state"] == "acknowledged", answer.text
            seen: list[dict[str, object]] = []
            while not any(a["alert_id"] == alert_id and a["state"] == "acknowledged" for a in seen):
                seen += events.alerts(1, timeout=10)  # the state at connect may come first
        missing = httpx.post(f"{urls[owner]}/api/alerts/a-0000/ack", headers=headers[owner], timeout=10)
        assert missing.status_code == 404
        done = httpx.post(f"{urls[owner]}/api/alerts/{alert_id}/resolve", headers=headers[owner], json={}, timeout=10)
        assert done.status_code == 200 and done.json()["state"] == "resolved", done.text

        # A new alarm, not taken by anyone; then kill -9 of its owner. The survivor takes
        # the partition over: the alert escalates on time, and a later press of the same
        # resident reaches the handheld (attached to that alert) within the budget.
        handheld.alerts_until(0.5)
        press(nats_cluster, 1, "d-1-alarm", "c-2")
        got = handheld.alerts_until(5.0)
        second = {str(a["alert_id"]) for _, a in got} - {alert_id}
        assert len(second) == 1, got
        instances[owner].kill()
        killed = time.monotonic()
        press(nats_cluster, 0, "d-1-alarm", "c-3")
        got = handheld.alerts_until(15.0)
        mine = [(at, a) for at, a in got if a["alert_id"] in second]
        assert {a["alert_id"] for _, a in got} <= second, "a closed alert came back or a second alert was made"
        pressed = [at for at, a in mine if a.get("event_count") == 2]
        assert pressed, mine
        gap = pressed[0] - killed
        assert gap <= 10.0, f"the alarm came {gap:.1f} s after the owner was killed"
        escalated = any(int(a.get("escalation_level") or 0) >= 1 for _, a in mine)
        assert escalated, "the unacknowledged alert did not escalate"
    finally:
        handheld.close()
