"""The gateway's memory of recent event ids (docs/ingest.md "Re-used ids"): a re-send is
not handed to the rules again, a new event re-using an id is — under its re-keyed id —
and a re-send of that one is a re-send. No broker, no database: only the receive path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway import Gateway, GatewayConfig
from mqtt import BrokerAddress
from mqtt.wire import Message
from tests.helpers import event, no_database, small_registry
from trygg.contract import Event, rekeyed_id
from trygg.pipeline import DeviceStatus

PREFIX = "ids/trygg/v1"
NOW = datetime.now(UTC)


def test_a_reused_id_is_handed_on_rekeyed_and_resends_are_not(tmp_path: Path) -> None:
    handed: list[str] = []

    def sink(item: Event | DeviceStatus) -> None:
        if isinstance(item, Event):
            handed.append(f"{item.device_id}/{item.event_id}")

    gateway = Gateway(BrokerAddress("127.0.0.1", 9), no_database(), small_registry(),
                      GatewayConfig(tmp_path / "spool", prefix=PREFIX, writers=1), sink=sink)  # never started
    old, new = NOW - timedelta(hours=1), NOW
    sent = [("d-1-alarm", event("e-1", "alarm.button", ts=old)),
            ("d-1-alarm", event("e-1", "alarm.button", ts=old)),   # re-send
            ("d-1-alarm", event("e-1", "alarm.button", ts=new)),   # counter reset: a new press
            ("d-1-alarm", event("e-1", "alarm.button", ts=new)),   # its re-send
            ("d-1-alarm", event("e-1", "alarm.button", ts=old)),   # the first again
            ("d-1-alarm", event("e-1", "alarm.cancel", ts=old)),   # same time, another type
            ("d-2-alarm", event("e-1", "alarm.button", ts=old))]   # another device's e-1
    gateway._on_messages([Message(f"{PREFIX}/devices/{d}/events", p, n, 1) for n, (d, p) in enumerate(sent)],
                         generation=1)
    assert sorted(handed) == sorted(["d-1-alarm/e-1",
                                     f"d-1-alarm/{rekeyed_id('e-1', 'alarm.button', new)}",
                                     f"d-1-alarm/{rekeyed_id('e-1', 'alarm.cancel', old)}",
                                     "d-2-alarm/e-1"])
    queued = [r for pending in gateway.writers[0]._chunks for r in pending.records]
    assert len(queued) == len(sent)  # every copy still goes to the store, which keeps one
