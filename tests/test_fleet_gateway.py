"""A clean run of the simulated fleet through the real gateway: every message accepted,
nothing dead-lettered, re-sent duplicates stored once."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from gateway import Gateway, GatewayConfig
from simulators import Fleet, MqttTarget, default_start, run_fleet
from storage import Pool
from tests.fix_db import scalar
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import wait_for
from trygg.contract import utcnow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_clean_fleet_run_leaves_no_dead_letters(mosquitto: MosquittoInstance, database: str, pool: Pool,
                                                  prefix: str, tmp_path: Path) -> None:
    # 900× for 6 s: the simulated day starts 1.5 h ago and catches up with now.
    fleet = Fleet(2026, 20, default_start(utcnow(), 900, 6))
    gateway = Gateway(mosquitto.address, pool, fleet.registry(),
                      GatewayConfig(tmp_path / "spool", prefix=prefix, client_id=f"fleet-{prefix.split('/')[0]}"))
    gateway.start()
    try:
        stats = run_fleet(fleet, MqttTarget.parse(mosquitto.url), prefix, speed=900, duration_s=6,
                          offline_on_exit=False)
        assert stats.published > 1000, "the fleet sent too little to prove anything"
        counts: list[int] = []

        def settled() -> list[int]:  # stored (keys of events, and heartbeats), once the count stops growing
            counts.append(int(str(scalar(database, "SELECT (SELECT count(*) FROM trygg.event_keys)"
                                                   " + (SELECT count(*) FROM trygg.heartbeats)"))))
            return counts

        wait_for(settled, lambda c: len(c) > 2 and c[-1] == c[-2] > 0, timeout=30, interval=1.0)
    finally:
        gateway.stop()
    with psycopg.connect(database) as conn:
        dead = conn.execute("SELECT reason, detail FROM trygg.dead_letters LIMIT 5").fetchall()
        events, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, event_id)) FROM trygg.events").fetchone() or (0, 0)
        keys = conn.execute("SELECT count(*) FROM trygg.event_keys").fetchone()
        # heartbeats are stored once per device and ts (docs/storage.md "Heartbeats")
        beats = conn.execute("SELECT count(*) FROM trygg.heartbeats").fetchone()
    assert dead == [], f"a clean run was dead-lettered: {dead}"
    assert events == distinct and keys == (events,), "a re-sent event was stored twice"
    assert beats is not None and beats[0] > 300 and events > 50
