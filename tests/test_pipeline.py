"""The whole path as staff meet it: a device publishes, `trygg up` (its own process)
raises the alert, a staff handheld subscribed to its team's topic receives it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.fix_alerts import Handheld, on_team
from tests.fix_db import PostgresInstance, scalar
from tests.fix_disk import SmallDisk, fill
from tests.fix_mqtt import MosquittoInstance, Publisher
from tests.fix_up import TryggProcess
from tests.helpers import event, small_registry, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.serial
def test_a_button_press_reaches_the_team_then_escalates_to_the_alarm_centre(
    up: Callable[[str], TryggProcess], database: str, handheld: Handheld, publisher: Publisher,
    prefix: str,
) -> None:
    up(database)
    sent = time.monotonic()
    publisher.publish_all([(f"{prefix}/devices/d-1-alarm/events", event("press-1", "alarm.button"))])
    east = wait_for(lambda: handheld.alerts(on_team(prefix, "east")), bool, timeout=5, interval=0.005)
    arrived = time.monotonic() - sent
    assert east, "no alert on the team's topic"
    alert = east[0]
    assert arrived < 1.0, f"the alert took {arrived:.3f} s"
    assert (alert["kind"], alert["priority"], alert["state"], alert["resident_id"], alert["team_id"]) == (
        "alarm", "high", "open", "r-1", "east")
    assert alert["trigger"]["event_id"] == "press-1" and alert["trigger"]["device_id"] == "d-1-alarm"
    assert alert["escalation_level"] == 0

    # Nobody acknowledges within the (shortened) high timeout: the alarm centre gets it.
    centre = wait_for(lambda: handheld.alerts(on_team(prefix, "alarm-centre")), bool, timeout=10)
    assert centre, "not escalated"
    assert centre[0]["alert_id"] == alert["alert_id"]
    assert centre[0]["escalation_level"] == 1
    rows = wait_for(lambda: scalar(database, "SELECT escalation_level FROM trygg.alerts WHERE alert_id = %s",
                                   alert["alert_id"]), lambda v: v is not None and v >= 1)
    assert rows is not None and rows >= 1
    transitions = scalar(database, "SELECT count(*) FROM trygg.alert_transitions WHERE alert_id = %s",
                         alert["alert_id"])
    assert transitions and int(str(transitions)) >= 1


def test_kill_9_with_open_alerts_keeps_them_open_once_and_raises_no_offline_alerts(
    up: Callable[[str], TryggProcess], database: str, mosquitto: MosquittoInstance,
    publisher: Publisher, prefix: str,
) -> None:
    trygg = up(database)
    watcher = Handheld(mosquitto, f"{prefix}/teams/east/alerts/+")
    try:
        publisher.publish_all([(f"{prefix}/devices/d-1-fall/events", event("fall-1", "fall.detected")),
                               (f"{prefix}/devices/d-1-smoke/events", event("smoke-1", "smoke.detected"))])
        opened = wait_for(lambda: {a["alert_id"] for a in watcher.alerts()}, lambda s: len(s) == 2)
        assert len(opened) == 2
        wait_for(lambda: scalar(database, "SELECT count(*) FROM trygg.alerts"), lambda n: n == 2)
    finally:
        watcher.close()
    trygg.kill()

    # The device did not get its PUBACK in time and re-sends; and a new press arrives.
    publisher.publish_all([(f"{prefix}/devices/d-1-fall/events", event("fall-1", "fall.detected"))])
    up(database)
    late = Handheld(mosquitto, f"{prefix}/teams/east/alerts/+")  # a handheld that connects now
    try:
        retained = wait_for(lambda: {a["alert_id"]: a for a in late.alerts()}, lambda d: len(d) >= 2)
        assert set(retained) == opened
        assert all(a["state"] == "open" for a in retained.values())
        time.sleep(3)  # long enough for a flood of offline alerts, if restart raised one
        with psycopg.connect(database) as conn:
            kinds = [r[0] for r in conn.execute("SELECT kind FROM trygg.alerts ORDER BY kind")]
        assert kinds == ["fall", "smoke"], "a restart must neither duplicate nor invent alerts"
        assert not [a for a in late.alerts() if a["alert_id"] not in opened]
    finally:
        late.close()


@pytest.mark.serial
def test_with_postgres_down_alerts_are_still_delivered_and_stored_when_it_returns(
    up: Callable[[str], TryggProcess], private_postgres: PostgresInstance, handheld: Handheld,
    publisher: Publisher, prefix: str,
) -> None:
    url = private_postgres.url("trygg")
    up(url)
    private_postgres.stop("immediate")
    sent = time.monotonic()
    publisher.publish_all([(f"{prefix}/devices/d-2-alarm/events", event("press-db-down", "alarm.button"))])
    got = wait_for(lambda: handheld.alerts(on_team(prefix, "east")), bool, timeout=5, interval=0.005)
    arrived = time.monotonic() - sent
    assert got, "no alert while the database was down"
    assert arrived < 1.0, f"the alert waited {arrived:.3f} s for something"
    time.sleep(1)
    private_postgres.start()
    stored = wait_for(lambda: scalar(url, "SELECT count(*) FROM trygg.alerts WHERE resident_id = 'r-2'"),
                      lambda n: n == 1, timeout=30)
    assert stored == 1
    events = wait_for(lambda: scalar(url, "SELECT count(*) FROM trygg.events WHERE event_id = 'press-db-down'"),
                      lambda n: n == 1, timeout=30)
    assert events == 1


def test_with_the_database_down_and_the_disk_full_every_alarm_still_reaches_staff(
    small_disk: SmallDisk, up: Callable[..., TryggProcess], private_postgres: PostgresInstance,
    handheld: Handheld, mosquitto: MosquittoInstance, prefix: str, tmp_path: Path,
) -> None:
    """Nothing can be made durable: PostgreSQL is stopped and the data directory (local
    log) is full. Trygg acknowledges nothing, so the broker soon stops sending on its
    session; every alarm pressed meanwhile still reaches the team's topic at once (the
    alarm watch, gateway/alarm_watch.py). Afterwards every event the broker acknowledged
    to the devices is stored exactly once, and Trygg goes on storing."""
    url = private_postgres.url("trygg")
    disk = small_disk(tmp_path / "small", "4m")
    # A window of 500 unacknowledged messages fills within a second of the stream below.
    up(url, data_dir=disk / "data", registry=small_registry(extra_devices=200),
       TRYGG_MQTT_RECEIVE_MAXIMUM="500", TRYGG_ESCALATE_HIGH_S="600")
    ballast = fill(disk)
    private_postgres.stop("immediate")

    devices = Publisher(mosquitto.address)
    presses: dict[str, float] = {}
    published = []
    try:
        for n in range(6000):
            device = f"load-{n % 200}"
            published.append(devices.publish(f"{prefix}/devices/{device}/events", event(f"hb-{n}", "heartbeat")))
            if n % 1000 == 999:  # a press every 1,000 events, the first after the window is full
                press = f"press-{n}"
                presses[press] = time.monotonic()
                published.append(devices.publish(f"{prefix}/devices/d-1-alarm/events",
                                                 event(press, "alarm.button")))
            if n % 200 == 199:
                time.sleep(0.05)
        for info in published:
            info.wait_for_publish(30)

        def seen() -> set[str]:
            return {a["last_event"]["event_id"] for a in handheld.alerts(on_team(prefix, "east"))}

        arrived = wait_for(seen, lambda got: set(presses) <= got, timeout=10)
        assert set(presses) <= arrived, f"alarms never reached staff: {sorted(set(presses) - arrived)}"

        ballast.unlink()
        private_postgres.start()
        total = len(published)
        # the presses are events rows; the heartbeats have a table of their own (docs/storage.md)
        stored = wait_for(lambda: scalar(url, "SELECT (SELECT count(*) FROM trygg.events)"
                                              " + (SELECT count(*) FROM trygg.heartbeats)"),
                          lambda n: n == total, timeout=90)
        assert stored == total, f"{stored} of {total} acknowledged events stored"
        assert scalar(url, "SELECT count(DISTINCT (device_id, event_id)) FROM trygg.events") == len(presses)
        assert scalar(url, "SELECT count(DISTINCT (device_id, ts)) FROM trygg.heartbeats") == total - len(presses)
        alerts = scalar(url, "SELECT count(*) FROM trygg.alerts WHERE kind = 'alarm'")
        assert alerts == 1, "the presses attach to one alarm alert of the resident"

        devices.publish_all([(f"{prefix}/devices/load-1/events", event("after", "heartbeat"))])
        after = wait_for(lambda: scalar(url, "SELECT count(*) FROM trygg.heartbeats WHERE device_id = 'load-1'"),
                         lambda n: n == 6000 // 200 + 1, timeout=30)
        assert after == 6000 // 200 + 1, "Trygg stopped storing after the fault"
    finally:
        devices.close()
