"""Trygg as a cluster loses no event and raises no alarm twice when any one machine dies (docs/cluster.md).

Processes of their own on loopback ports (bench/_cluster.py): three NATS nodes, a
PostgreSQL primary and its standby, two `trygg up --cluster`; a fleet of 1,000 devices
publishing QoS 1 across the nodes, alarm presses, a staff handheld on the team's topic
(bench/_fleet.py). Killed with `kill -9` in turn (bench/_drill.py): one NATS node (made first
the leader of the owners' bucket and of the streams on the alarm path: the worst one), the
instance owning a pressed alarm's resident, the PostgreSQL primary (the standby
promoted). After each, counted from PostgreSQL and the handheld.

The first test checks the harness itself, with no Trygg: that what it starts and kills
behaves as the fault test takes for granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path

import nats
import psycopg
import pytest

from bench._cluster import LocalCluster, load_registry, trygg_has_cluster_mode
from bench._drill import Drill
from bench._fleet import PREFIX, TEAM, Fleet, Handheld, Presser, Pressers, cluster_registry_yaml, stored_counts
from cluster.layout import MQTT_STREAM, Layout, ensure_layout
from mqtt.wire import Protocol, connect_packet, publish_packet

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

DEVICES = 1000
EVENTS = 20_000
RATE = 400  # events/s across the cluster: the test's machine also runs everything else
PRESSERS = 2000
ESCALATE_S = 20.0
GAP_BUDGET_S = 10.0


def retained_alert(port: int, alert_id: str, event_id: str) -> None:
    """What an instance publishes for an alert, put on the team topic by hand."""
    alert = {"alert_id": alert_id, "state": "open", "escalation_level": 0, "trigger": {"event_id": event_id},
             "last_event": {"event_id": event_id}}
    deadline = time.monotonic() + 30
    while True:  # right after a node died or came back, MQTT sessions wait for the streams' leaders
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(connect_packet(f"test-{alert_id}", Protocol.V311, 0, None, None, 0, 0, clean=True))
            if sock.recv(4)[:1] == b"\x20":
                sock.sendall(publish_packet(f"{PREFIX}/teams/{TEAM}/alerts/{alert_id}", json.dumps(alert).encode(),
                                            1, Protocol.V311, retain=True))
                if sock.recv(4)[:1] == b"\x40":  # PUBACK
                    return
        assert time.monotonic() < deadline, f"MQTT on port {port} refused the alert for 30 s"
        time.sleep(0.5)


async def mqtt_stream_messages(local: LocalCluster, lay_out: bool = False) -> int:
    nc = await nats.connect(local.nats.urls)
    try:
        js = nc.jetstream()
        if lay_out:
            await ensure_layout(js, Layout(), local.nats.mqtt[0])
        return (await js.stream_info(MQTT_STREAM)).state.messages
    finally:
        await nc.close()


@pytest.mark.drill
@pytest.mark.timeout(300)
def test_the_harness_publishes_fails_over_and_promotes_without_trygg(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "cluster", instances=0)
    fleet = presser = handheld = None
    try:
        local.start_services()
        asyncio.run(mqtt_stream_messages(local, lay_out=True))  # the ingest consumers keep what is published
        handheld = Handheld(local.nats.mqtt, [f"{PREFIX}/teams/{TEAM}/alerts/+"], first_node=2)
        presser = Presser(local.nats.mqtt, first_node=1)
        fleet = Fleet(local.nats.mqtt, DEVICES)
        fleet.connect()
        fleet.start(1000)
        time.sleep(3)

        first = presser.press("pd-0", "p-0", "first")
        retained_alert(local.nats.mqtt[0][1], "a-1", "first")
        assert handheld.wait(["first"], 10) == []
        assert handheld.alert_ids["first"] == {"a-1"}

        local.nats.kill(1)  # the presser's node: it moves on and sends what was not acknowledged
        second = presser.press("pd-1", "p-1", "second")
        deadline = time.monotonic() + 30
        while presser.unacked() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.acked and second.acked
        local.nats.start(1)
        local.nats.wait_ready()
        local.nats.kill(2)  # the handheld's: it moves on, and receives there
        deadline = time.monotonic() + 30
        while handheld.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        local.nats.start(2)
        local.nats.wait_ready()
        # Sent again until it arrives, as the instances do (RESEND_OPEN_S): right after a
        # node came back, a node acknowledged such a publish and did not deliver it.
        deadline = time.monotonic() + 30
        missing = ["second"]
        while missing and time.monotonic() < deadline:
            retained_alert(local.nats.mqtt[1][1], "a-2", "second")
            missing = handheld.wait(["second"], 2)
        assert missing == []
        assert handheld.alert_ids["first"] == {"a-1"}

        assert fleet.stop(60), "not every publish of the fleet was acknowledged"
        assert fleet.published >= 3000
        held = asyncio.run(mqtt_stream_messages(local))
        assert held >= fleet.published + 2  # each acknowledged publish is in $MQTT_msgs (re-sends may repeat)

        with psycopg.connect(local.pg.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (i int)")
            conn.execute("INSERT INTO t VALUES (1)")
        local.pg.kill_primary()
        local.pg.promote()
        with psycopg.connect(local.pg.url(), autocommit=True) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        for closing in (handheld, presser, fleet):
            if closing is not None:
                closing.close()
        local.stop()


@pytest.mark.drill
@pytest.mark.timeout(1200)
def test_no_acknowledged_event_or_alarm_is_lost_or_doubled_when_any_one_machine_dies(tmp_path: Path) -> None:
    if not trygg_has_cluster_mode():
        pytest.skip("`trygg up --cluster` is not in this checkout")
    local = LocalCluster(tmp_path / "cluster", instances=2, settings={
        "TRYGG_ESCALATE_HIGH_S": str(ESCALATE_S), "TRYGG_DB_RETRY_S": "0.5", "TRYGG_LOG_LEVEL": "info"})
    fleet = presser = handheld = None
    try:
        local.start_services()
        load_registry(cluster_registry_yaml(DEVICES, PRESSERS), local.pg.url(), tmp_path)
        local.start_instances()
        handheld = Handheld(local.nats.mqtt, [f"{PREFIX}/teams/{TEAM}/alerts/+"], first_node=2)
        presser = Presser(local.nats.mqtt, first_node=0)
        fleet = Fleet(local.nats.mqtt, DEVICES)
        fleet.connect()
        drill = Drill(local, fleet, Pressers(PRESSERS, presser), handheld, RATE, window_s=10.0,
                      escalate_s=ESCALATE_S)
        drill.warm_up()
        fleet.start(RATE)
        drill.press_for(5, 0.25, tag="before")

        nats_kill = drill.kill_nats_node(1)
        after_nats = drill.count()
        owner_kill = drill.kill_owner()
        after_owner = drill.count()
        pg_kill = drill.kill_postgres_primary()
        while fleet.published < EVENTS:  # the stream: at least 20,000 events
            time.sleep(0.5)
        final = drill.count(resume=False)
        final_db = stored_counts(local.pg.url())
    finally:
        for closing in (handheld, presser, fleet):
            if closing is not None:
                closing.close()
        local.stop()

    assert final.published >= EVENTS
    for count in (after_nats, after_owner, final):
        assert count.flushed, "every publish of the fleet was acknowledged"
        # every acknowledged event stored exactly once
        assert count.stored_distinct == count.published, count.line()
        assert count.stored_rows == count.stored_distinct, count.line()
        assert count.press_distinct == count.presses == count.press_rows, count.line()
        # every press one alert id, delivered to the team's topic
        assert count.without_alert == [], count.line()
        assert count.alerts_twice == [], count.line()
        # no device_offline for a device that kept publishing
        assert count.offline_alerts == 0, count.line()
        # and the instances kept running (the harness restarts one that ended, as a supervisor would)
        assert count.exits == [], count.line()
    assert owner_kill.escalated, "the alert open when its owner died was escalated by the next owner"
    for fault in (nats_kill, owner_kill, pg_kill):
        assert fault.undelivered == 0, fault.line()
        assert fault.gap_s is not None and fault.gap_s <= GAP_BUDGET_S, fault.line()
    assert final_db.offline_alerts == 0
