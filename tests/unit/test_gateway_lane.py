"""The alarm lane: in a receive buffer holding several messages, alarms, falls and smoke
reach the rules before the rest, also when they arrive during a long read; what is
stored keeps the order received."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway import Gateway
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
    return Gateway(BrokerAddress("127.0.0.1", 9), no_database(), tmp_path / "spool",
                   small_registry(), prefix=PREFIX, sink=sink, writers=1)


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


def test_on_the_loop_a_read_that_comes_during_another_waits_behind_it_in_order(tmp_path: Path) -> None:
    """While a read is handled the socket is read every few messages (`read_now`, here
    handing over what a socket would hold). An alarm read that way is handed on at once;
    the background traffic read with it waits behind the read being handled and follows
    in a later turn of the loop; storage keeps the order received."""
    handed: list[str] = []

    async def receive() -> Gateway:
        gateway = _gateway(tmp_path, handed)
        socket_holds = [[_message(21, "d-1-alarm", event("hb-20"))],
                        [_message(22, "d-1-alarm", event("press-1", "alarm.button")),
                         _message(23, "d-1-alarm", event("hb-21"))]]
        gateway._subscriber.read_now = (  # type: ignore[method-assign]
            lambda: gateway._on_messages(socket_holds.pop(0), 1) if socket_holds else None)
        gateway._on_messages([_message(i + 1, "d-1-alarm", event(f"hb-{i}")) for i in range(20)], generation=1)
        assert handed == [*(f"hb-{i}" for i in range(15)), "press-1", *(f"hb-{i}" for i in range(15, 20))]
        await asyncio.sleep(0)
        return gateway

    gateway = asyncio.run(receive())
    background = [f"hb-{i}" for i in range(22)]
    assert handed == [*background[:15], "press-1", *background[15:]]
    queued = [r.event_id for pending in gateway.writers[0]._chunks for r in pending.records]  # type: ignore[union-attr]
    assert queued == [*background[:21], "press-1", "hb-21"]
    assert [m for pending in gateway.writers[0]._chunks for m in pending.mids] == list(range(1, 24))
