"""The spool on a full disk, against a real Mosquitto and a private PostgreSQL that is
stopped: the spool directory is a small tmpfs that fills up. Whatever the gateway
acknowledged (the broker answered the device with PUBACK and will not send it again once
Trygg acknowledges it) is stored exactly once after space is freed and PostgreSQL is
back; the durable writers are still alive, and Trygg is still storing afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from gateway import Gateway, GatewayConfig
from storage.local_log import degraded
from tests.fix_db import PoolOf, PostgresInstance, scalar
from tests.fix_disk import SmallDisk, fill, free_bytes
from tests.fix_mqtt import MosquittoInstance, Publisher
from tests.helpers import event, small_registry, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = ("d-1-alarm", "d-2-alarm", "d-1-motion")


Stored = tuple[str, str | datetime]


class Stream:
    """A QoS 1 stream over three devices; remembers every event the broker acknowledged
    (PUBACK), by device: a motion event by its id, a heartbeat by its ts (heartbeats are
    stored once per device and ts, docs/storage.md "Heartbeats")."""

    def __init__(self, mosquitto: MosquittoInstance, prefix: str) -> None:
        self.prefix = prefix
        self.pub = Publisher(mosquitto.address, protocol=mqtt.MQTTv5)
        self.sent: list[tuple[Stored, mqtt.MQTTMessageInfo]] = []
        self._n = 0
        self._ts = datetime.now(UTC)

    def publish(self, count: int, tag: str) -> None:
        infos = []
        for _ in range(count):
            device = DEVICES[self._n % len(DEVICES)]
            event_id = f"{tag}-{self._n:06d}"
            self._ts = max(datetime.now(UTC), self._ts + timedelta(microseconds=1))
            if "motion" in device:
                info = self.pub.publish(f"{self.prefix}/devices/{device}/events",
                                        event(event_id, "motion", {"room": "kitchen"}, self._ts))
                self.sent.append(((device, event_id), info))
            else:
                info = self.pub.publish(f"{self.prefix}/devices/{device}/events",
                                        event(event_id, "heartbeat", {"battery_pct": 80}, self._ts))
                self.sent.append(((device, self._ts), info))
            infos.append(info)
            self._n += 1
        for info in infos:
            info.wait_for_publish(60)

    def acknowledged(self) -> set[Stored]:
        return {key for key, info in self.sent if info.is_published()}

    def close(self) -> None:
        self.pub.close()


def stored(url: str) -> list[Stored]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT device_id, event_id FROM trygg.events")] + \
               [(r[0], r[1]) for r in conn.execute("SELECT device_id, ts FROM trygg.heartbeats")]


def count(url: str) -> int:
    return int(scalar(url, "SELECT (SELECT count(*) FROM trygg.events) + (SELECT count(*) FROM trygg.heartbeats)")
               or 0)


@pytest.fixture
def outage(mosquitto: MosquittoInstance, private_postgres: PostgresInstance, pool_of: PoolOf, prefix: str,
           tmp_path: Path, small_disk: SmallDisk) -> Iterator[tuple[Gateway, Stream, Path]]:
    """A gateway whose spool is on a 1 MiB tmpfs, connected, then PostgreSQL stopped."""
    spool_dir = small_disk(tmp_path / "spool", "1m")
    gw = Gateway(mosquitto.address, pool_of(private_postgres.url("trygg")), small_registry(),
                 GatewayConfig(spool_dir, prefix=prefix, client_id=f"fd{prefix.split('/')[0]}", retry_s=0.2,
                               batch_max=200))
    gw.start()
    stream = Stream(mosquitto, prefix)
    try:
        stream.publish(30, "up")
        assert wait_for(lambda: count(private_postgres.url("trygg")), lambda n: n == 30) == 30
        private_postgres.stop("immediate")
        yield gw, stream, spool_dir
    finally:
        stream.close()
        gw.stop()


def assert_everything_acknowledged_is_stored_once(gw: Gateway, stream: Stream, url: str) -> None:
    acked = stream.acknowledged()
    assert len(acked) == len(stream.sent), "the broker acknowledged every publish"
    rows = wait_for(lambda: stored(url), lambda r: len(r) >= len(acked), timeout=60, interval=0.2)
    assert len(rows) == len(set(rows)), "an event stored twice"
    missing = acked - set(rows)
    assert not missing, f"{len(missing)} acknowledged events never stored, e.g. {sorted(missing)[:3]}"
    assert all(w._thread.is_alive() for w in gw.writers), "a durable writer thread ended"
    # Trygg is still storing.
    stream.publish(20, "after")
    assert wait_for(lambda: count(url), lambda n: n == len(acked) + 20, timeout=30) == len(acked) + 20
    assert wait_for(lambda: sum(w._spool.pending_bytes() for w in gw.writers), lambda n: n == 0) == 0
    assert wait_for(degraded, lambda d: d == {}, timeout=10) == {}, "the spool still reported as degraded"


def test_a_spool_disk_that_fills_up_acknowledges_only_what_it_stored(
        outage: tuple[Gateway, Stream, Path], private_postgres: PostgresInstance) -> None:
    """The disk fills in the middle of a batch (a short write): the cut-off records are
    not acknowledged, and once space is back nothing glues onto the fragment."""
    gw, stream, spool_dir = outage
    ballast = fill(spool_dir, limit=512 * 1024)
    stream.publish(6000, "down")  # ~1.1 MB of spool records: more than the disk holds
    wait_for(lambda: free_bytes(spool_dir), lambda n: n < 64 * 1024, timeout=20)
    time.sleep(2)  # the writers retry against the full disk meanwhile
    assert free_bytes(spool_dir) < 64 * 1024, "the disk did not fill up"
    assert degraded() == {"spool": "disk full"}

    ballast.unlink()  # space is freed while PostgreSQL is still down: the held batches are spooled
    time.sleep(2)
    private_postgres.start()
    assert_everything_acknowledged_is_stored_once(gw, stream, private_postgres.url("trygg"))


def test_a_checkpoint_that_cannot_be_written_during_replay_ends_nothing(
        outage: tuple[Gateway, Stream, Path], private_postgres: PostgresInstance) -> None:
    """PostgreSQL returns while the spool's disk is full: the replay cannot write its
    checkpoint, and new events cannot be spooled. The writers go on, replay, store."""
    gw, stream, spool_dir = outage
    stream.publish(1500, "down")  # ~300 KB: fits
    assert wait_for(lambda: all(w.idle.is_set() for w in gw.writers), bool, timeout=20)
    spooled = sum(w._spool.pending_bytes() for w in gw.writers)
    assert spooled > 100_000, "the events were not spooled"
    ballast = fill(spool_dir)  # the disk is full now
    assert free_bytes(spool_dir) == 0

    stop = threading.Event()

    def keep_publishing() -> None:  # new events arrive during the replay
        while not stop.is_set():
            stream.publish(50, "live")
            stop.wait(0.1)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        assert wait_for(degraded, lambda d: d == {"spool": "disk full"}, timeout=10) == {"spool": "disk full"}
        private_postgres.start()
        time.sleep(5)
        ballast.unlink()
        time.sleep(1)
    finally:
        stop.set()
        publisher.join()
    assert_everything_acknowledged_is_stored_once(gw, stream, private_postgres.url("trygg"))
