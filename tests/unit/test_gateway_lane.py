"""The alarm lane: in a receive buffer holding several messages, alarms, falls and smoke
reach the rules before the rest, also when they arrive while a long read is handled a
slice at a time; what is stored keeps the order received."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway import Gateway, GatewayConfig, ingress
from mqtt import BrokerAddress
from mqtt.wire import Message
from tests.helpers import event, no_database, small_registry
from trygg.contract import Event
from trygg.pipeline import DeviceStatus

PREFIX = "lane/trygg/v1"


def _gateway(tmp_path: Path, handed: list[str]) -> Gateway:
    def sink(item: Event | DeviceStatus) -> None:
        handed.append(item.event_id if isinstance(item, Event) else f"status {item.device_id}")

    # never started: no broker, no database; only the receive path is exercised
    return Gateway(BrokerAddress("127.0.0.1", 9), no_database(), small_registry(),
                   GatewayConfig(tmp_path / "spool", prefix=PREFIX, writers=1), sink=sink)


def _message(mid: int, device: str, payload: bytes) -> Message:
    return Message(f"{PREFIX}/devices/{device}/events", payload, mid, 1)


def test_an_alarm_behind_background_traffic_reaches_the_rules_first(tmp_path: Path) -> None:
    handed: list[str] = []
    gateway = _gateway(tmp_path, handed)
    messages = [_message(1, "d-1-alarm", event("hb-1")),
                _message(2, "d-1-alarm", event("hb-2")),
                _message(3, "d-1-fall", event("fall-1", "fall.detected")),
                _message(4, "d-1-alarm", event("hb-3")),
                _message(5, "d-1-alarm", event("press-1", "alarm.button")),
                _message(6, "d-1-alarm", event("cancel-1", "alarm.cancel"))]
    gateway._on_messages(messages, generation=1)
    assert handed == ["fall-1", "press-1", "cancel-1", "hb-1", "hb-2", "hb-3"]
    queued = [r for pending in gateway.writers[0]._chunks for r in pending.records]
    assert [r.event_id for r in queued if isinstance(r, Event)] == ["hb-1", "hb-2", "fall-1", "hb-3",
                                                                      "press-1", "cancel-1"]
    assert [m for pending in gateway.writers[0]._chunks for m in pending.mids] == [1, 2, 3, 4, 5, 6]


def test_a_bad_message_in_the_lane_is_dead_lettered_in_its_place(tmp_path: Path) -> None:
    handed: list[str] = []
    gateway = _gateway(tmp_path, handed)
    messages = [_message(1, "d-1-alarm", event("hb-1")),
                _message(2, "d-1-alarm", b'{"type": "alarm.button"}'),  # no id, no ts
                _message(3, "d-1-alarm", event("press-1", "alarm.button"))]
    gateway._on_messages(messages, generation=1)
    assert handed == ["press-1", "hb-1"]
    queued = [r for pending in gateway.writers[0]._chunks for r in pending.records]
    assert [type(r).__name__ for r in queued] == ["Event", "DeadLetter", "Event"]
    assert "id" in queued[1].detail  # type: ignore[union-attr]


def test_on_the_loop_a_read_that_comes_during_another_waits_behind_it_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loop a long read is handled a slice at a time (here every `SLICE_CHECK`
    messages), the loop reading the socket in between. An alarm read meanwhile is handed
    on at once; the background traffic read with it waits behind the rest of the read
    being handled; storage keeps the order received."""
    monkeypatch.setattr(ingress, "SLICE_S", 0.0)
    handed: list[str] = []

    async def receive() -> Gateway:
        gateway = _gateway(tmp_path, handed)
        gateway._on_messages([_message(i + 1, "d-1-alarm", event(f"hb-{i}")) for i in range(20)], generation=1)
        assert handed == [f"hb-{i}" for i in range(8)], "not handled a slice at a time"
        # the socket held this meanwhile: the loop's next read
        gateway._on_messages([_message(21, "d-1-alarm", event("press-1", "alarm.button")),
                              _message(22, "d-1-alarm", event("hb-20"))], 1)
        assert handed[-1] == "press-1"
        for _ in range(5):
            await asyncio.sleep(0)
        return gateway

    gateway = asyncio.run(receive())
    background = [f"hb-{i}" for i in range(21)]
    assert handed == [*background[:8], "press-1", *background[8:]]
    queued = [r.event_id for pending in gateway.writers[0]._chunks for r in pending.records]  # type: ignore[union-attr]
    assert queued == [*background[:20], "press-1", "hb-20"]
    assert [m for pending in gateway.writers[0]._chunks for m in pending.mids] == list(range(1, 23))
