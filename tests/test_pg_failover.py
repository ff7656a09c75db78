"""The gateway keeps storing across a PostgreSQL primary → standby switch (docs/cluster.md
"PostgreSQL: a primary and a standby"): given the multi-host URL of a primary and its
synchronous standby, while devices publish QoS 1 events without pause, the primary is
killed with `kill -9` and, a moment later, the standby promoted. The local spool covers
the time no server takes writes; afterwards every event the broker acknowledged to its
device is stored exactly once on the promoted server.

Prints the figures docs/cluster.md quotes: how long the promotion took, and how long the
gateway was without storage (from its first failed write to its first write on the
promoted server)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from prometheus_client import REGISTRY

from gateway import Gateway, GatewayConfig
from tests.fix_db import PoolOf
from tests.fix_mqtt import MosquittoInstance, Publisher
from tests.fix_pg_pair import PgPair
from tests.fix_up import TryggProcess
from tests.helpers import event, small_registry, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.serial]

DEVICES = 50
#: events per second the devices publish, together
RATE = 400
#: publishing before the kill, between the kill and the promotion (an operator or a tool
#: such as Patroni deciding), and after it
BEFORE_S, UNDECIDED_S, AFTER_S = 3.0, 2.0, 5.0


class Devices:
    """`DEVICES` alarm units publishing QoS 1 events at `RATE` per second on a thread, each
    event's PUBACK kept (`acknowledged`)."""

    def __init__(self, publisher: Publisher, prefix: str) -> None:
        self._publisher = publisher
        self._prefix = prefix
        self._sent: list[tuple[str, str, mqtt.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devices")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            device, event_id = f"load-{n % DEVICES}", f"e-{n}"
            payload = event(event_id, "alarm.cancel", ts=datetime.now(UTC))
            info = self._publisher.publish(f"{self._prefix}/devices/{device}/events", payload)
            self._sent.append((device, event_id, info))
            n += 1
            ahead = started + n / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + timeout
        for _, _, info in self._sent:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))

    def acknowledged(self) -> set[tuple[str, str]]:
        return {(device, event_id) for device, event_id, info in self._sent if info.is_published()}

    @property
    def sent(self) -> int:
        return len(self._sent)


class StorageWatch:
    """Samples `gateway.database_ok` every few milliseconds: when it was first lost, and
    when it came back after that."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.lost_at: float | None = None
        self.back_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage-watch")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            ok = self._gateway.database_ok
            if not ok and self.lost_at is None:
                self.lost_at = time.monotonic()
            elif ok and self.lost_at is not None and self.back_at is None:
                self.back_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total") or 0.0


def test_trygg_up_runs_on_the_multi_host_url(pg_pair: PgPair, up: Callable[..., TryggProcess],
                                             publisher: Publisher, prefix: str) -> None:
    """Migrations, the registry, the gateway and the dashboard's pools all take the URL of
    both servers and use the one that accepts writes."""
    trygg = up(pg_pair.conninfo)
    found = re.search(r"dashboard (http://\S+)", trygg.log.read_text())
    assert found, trygg.log.read_text()[-2000:]
    health = wait_for(lambda: httpx.get(found[1] + "healthz", timeout=10).json(), lambda h: h["database"] == "up",
                      timeout=10)
    assert health["database"] == "up", health
    publisher.publish_all([(f"{prefix}/devices/d-1-fall/events", event("e-up", "fall.detected"))])

    def stored() -> int:
        with psycopg.connect(pg_pair.primary_url) as conn:
            row = conn.execute("SELECT count(*) FROM trygg.events WHERE event_id = 'e-up'").fetchone()
        return int(row[0]) if row else 0

    assert wait_for(stored, lambda n: n == 1) == 1


def test_every_acknowledged_event_is_stored_once_across_a_promotion(
        pg_pair: PgPair, mosquitto: MosquittoInstance, publisher: Publisher, prefix: str,
        pool_of: PoolOf, tmp_path: Path) -> None:
    gateway = Gateway(mosquitto.address, pool_of(pg_pair.conninfo), small_registry(DEVICES),
                      GatewayConfig(tmp_path / "spool", prefix=prefix, client_id=f"gw-{prefix.split('/')[0]}",
                                    retry_s=0.5))
    gateway.start()
    devices = Devices(publisher, prefix)
    spooled, replayed = _counter("trygg_gateway_spooled"), _counter("trygg_gateway_replayed")
    try:
        devices.start()
        time.sleep(BEFORE_S)
        assert gateway.database_ok
        watch = StorageWatch(gateway)
        killed_at = time.monotonic()
        pg_pair.kill_primary()
        time.sleep(UNDECIDED_S)
        promote_s = pg_pair.promote()
        promoted_at = time.monotonic()
        time.sleep(AFTER_S)
        devices.stop()
        acknowledged = devices.acknowledged()
        assert wait_for(lambda: watch.back_at, lambda at: at is not None, timeout=30) is not None, \
            "the gateway did not store again on the promoted server"
        watch.stop()

        def stored() -> int:
            with psycopg.connect(pg_pair.standby_url) as conn:
                row = conn.execute("SELECT count(*) FROM trygg.events WHERE device_id LIKE 'load-%'").fetchone()
            return int(row[0]) if row else 0

        wait_for(stored, lambda n: n >= len(acknowledged), timeout=30)
    finally:
        gateway.stop()

    with psycopg.connect(pg_pair.standby_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        rows = conn.execute("SELECT device_id, event_id, count(*) FROM trygg.events"
                            " WHERE device_id LIKE 'load-%' GROUP BY 1, 2").fetchall()
    counts = {(device, event_id): int(n) for device, event_id, n in rows}
    assert devices.sent >= RATE * (BEFORE_S + UNDECIDED_S + AFTER_S) * 0.8
    assert len(acknowledged) == devices.sent, "the broker did not acknowledge every event"
    assert not [key for key in acknowledged if key not in counts], "acknowledged events missing"
    assert [key for key, n in counts.items() if n != 1] == [], "events stored more than once"
    assert watch.lost_at is not None and watch.back_at is not None
    print(f"\npg failover: {devices.sent} events sent, {len(acknowledged)} acknowledged, {len(counts)} stored "
          f"once; promotion took {promote_s:.2f} s; storage lost {watch.lost_at - killed_at:.2f} s after the "
          f"kill, back {watch.back_at - promoted_at:.2f} s after the promotion: without storage "
          f"{watch.back_at - watch.lost_at:.2f} s ({UNDECIDED_S:.0f} s of them before the promotion); "
          f"spooled {_counter('trygg_gateway_spooled') - spooled:.0f}, replayed "
          f"{_counter('trygg_gateway_replayed') - replayed:.0f}")
