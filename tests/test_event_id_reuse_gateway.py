"""A device whose event counter reset, through the real gateway (Mosquitto and
PostgreSQL): its new press re-using an old id reaches the rules and opens an alert of its
own, is stored once under the re-keyed id, and a re-send of it changes nothing — before
and after the gateway restarts (docs/ingest.md "Re-used ids")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts import AlertService, ChangeReason, Timeouts
from gateway import Gateway
from processors import Processor
from tests.fix_mqtt import Publisher
from tests.helpers import event, small_registry, wait_for
from trygg.contract import Event, rekeyed_id
from trygg.pipeline import DeviceStatus

pytestmark = pytest.mark.integration

StartGateway = Callable[[], Gateway]


class Rules:
    """The sink of the gateway: what reached the rules. The test thread runs them."""

    def __init__(self) -> None:
        self.handed: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, item: Event | DeviceStatus) -> None:
        if isinstance(item, Event):
            with self._lock:
                self.handed.append(item)

    def ids(self) -> list[str]:
        with self._lock:
            return [e.event_id for e in self.handed]


@pytest.fixture
def rules() -> Rules:
    return Rules()




def stored(url: str) -> list[tuple[str, datetime]]:
    with psycopg.connect(url) as conn:
        return [(str(e), ts) for e, ts in conn.execute(
            "SELECT event_id, ts FROM trygg.events ORDER BY ts")]


def test_a_reset_devices_press_reaches_the_rules_and_opens_a_second_alert(
        start_gateway: StartGateway, rules: Rules, publisher: Publisher, database: str, prefix: str) -> None:
    now = datetime.now(UTC).replace(microsecond=250_000)
    first_ts, reset_ts, later_ts = now - timedelta(hours=2), now - timedelta(minutes=1), now
    topic = f"{prefix}/devices/d-1-alarm/events"
    registry = small_registry()
    processor, alerts = Processor(registry), AlertService(registry, Timeouts())

    def run_rules(handed: list[Event], at: datetime) -> list[ChangeReason]:
        return [c.reason for ev in handed for c in alerts.apply(processor.handle(ev, at))]

    gw = start_gateway(sink=rules)
    publisher.publish_all([(topic, event("e-1", "alarm.button", ts=first_ts))])
    assert wait_for(rules.ids, lambda ids: len(ids) == 1) == ["e-1"]
    [opened] = run_rules(rules.handed, first_ts)
    assert opened is ChangeReason.OPENED
    [first_alert] = alerts.active()
    alerts.resolve(first_alert.alert_id, "ola", first_ts + timedelta(minutes=15))

    # The unit was reset and counts from e-1 again: a new press, then its re-send.
    press = event("e-1", "alarm.button", ts=reset_ts)
    publisher.publish_all([(topic, press), (topic, press)])
    new_id = rekeyed_id("e-1", "alarm.button", reset_ts)
    assert wait_for(lambda: len(stored(database)), lambda n: n == 2) == 2
    time.sleep(0.3)  # room for a wrong second hand-off of the re-send
    assert rules.ids() == ["e-1", new_id], "the new press was dropped, or its re-send handed on"
    assert run_rules(rules.handed[1:], reset_ts) == [ChangeReason.OPENED]
    [second_alert] = alerts.active()
    assert second_alert.alert_id != first_alert.alert_id
    assert second_alert.trigger["event_id"] == new_id
    assert stored(database) == [("e-1", first_ts), (new_id, reset_ts)]

    # Restarted, the gateway no longer remembers e-1: the store and the alert service
    # tell the next reset press apart on their own, and the old press re-delivered too.
    alerts.resolve(second_alert.alert_id, "ola", reset_ts + timedelta(minutes=5))
    gw.stop()
    start_gateway(sink=rules)
    again = event("e-1", "alarm.button", ts=later_ts)
    publisher.publish_all([(topic, again), (topic, again), (topic, press)])
    third_id = rekeyed_id("e-1", "alarm.button", later_ts)
    assert wait_for(lambda: len(stored(database)), lambda n: n == 3) == 3
    wait_for(lambda: len(rules.ids()), lambda n: n >= 4)
    time.sleep(0.3)
    assert rules.ids()[2:] == ["e-1", new_id]  # the new press with the device's id; the old one re-keyed
    assert run_rules(rules.handed[2:], later_ts) == [ChangeReason.OPENED]
    [third_alert] = alerts.active()
    assert third_alert.alert_id not in (first_alert.alert_id, second_alert.alert_id)
    assert third_alert.trigger["event_id"] == third_id  # as stored
    assert stored(database) == [("e-1", first_ts), (new_id, reset_ts), (third_id, later_ts)]
