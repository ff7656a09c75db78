"""What staff meet of the alert stage: a staff `Handheld` subscribed to a team's alert
topic, an `AlertStage` running on a thread of its own (`start_stage`), and the intents
and changes the tests feed it.

Fixtures `handheld` (one handheld on every team of the test's prefix), `handhelds`
(handhelds on any topic filter) and `start_stage`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts import AlertClosed, AlertConfig, AlertStage, Change, ChangeReason
from tests.fix_db import PoolOf
from tests.fix_mqtt import MosquittoInstance, set_nodelay
from tests.helpers import small_registry, wait_for
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry

T = TypeVar("T")


def intent(kind: AlertKind = AlertKind.ALARM, device: str = "d-1-alarm", event_id: str | None = None,
           event_type: str = "alarm.button", *, resident: str = "r-1",
           action: IntentAction = IntentAction.OPEN, priority: Priority = Priority.HIGH,
           at: datetime | None = None, only_if_open: bool = False) -> AlertIntent:
    at = at or datetime.now(UTC)
    ev = Event(device, event_id or f"e-{uuid.uuid4().hex[:8]}", EventType(event_type), at, at, {}, resident)
    return AlertIntent(action, resident, kind, priority, at, (device, ev.event_id), ev, only_if_open=only_if_open)


def an_alert() -> Change:
    """A critical alarm of r-1, opened now, as the alert service hands it to the publisher."""
    now = datetime.now(UTC)
    alert = Alert(alert_id=f"a-{secrets.token_hex(4)}", resident_id="r-1", team_id="east", kind=AlertKind.ALARM,
                  priority=Priority.CRITICAL, state=AlertState.OPEN, opened_at=now, updated_at=now,
                  teams=("east",), escalated_at=now)
    return Change(ChangeReason.OPENED, alert)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.payload)  # type: ignore[no-any-return]


class Handheld:
    """A staff handheld: subscribes to a topic filter with QoS 1 and records what arrives."""

    def __init__(self, broker: MosquittoInstance, topic_filter: str) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hh-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_socket_open = set_nodelay
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(topic_filter, qos=1)
        self.client.connect(broker.address.host, broker.address.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "handheld did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.perf_counter()))

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def wait(self, done: Callable[[list[Received]], bool], timeout: float = 10) -> list[Received]:
        return wait_for(self.received, done, timeout=timeout, interval=0.005)

    def alerts(self, where: Callable[[str, dict[str, Any]], bool] = lambda t, a: True) -> list[dict[str, Any]]:
        """The alerts received (an empty payload, a cleared retained alert, is none) that
        `where(topic, alert)` picks."""
        return [m.doc for m in self.received() if m.payload and where(m.topic, m.doc)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alerts_of(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.doc for m in messages if m.payload]


def on_team(prefix: str, team: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda topic, alert: topic.startswith(f"{prefix}/teams/{team}/alerts/")


@pytest.fixture
def handheld(mosquitto: MosquittoInstance, prefix: str) -> Iterator[Handheld]:
    device = Handheld(mosquitto, f"{prefix}/teams/+/alerts/+")
    yield device
    device.close()


class Running:
    """An AlertStage running on an event loop of its own thread (the test stays synchronous)."""

    def __init__(self, stage: AlertStage) -> None:
        self.stage = stage
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-alerts-loop", daemon=True)
        self.thread.start()

        async def start() -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(stage.run(), name="alerts.stage")

        self.task = self._submit(start()).result(5)
        self.call(lambda: None)
        self._submit(asyncio.wait_for(stage.wait_ready(), 10)).result(15)

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop's thread (where the stage's methods belong)."""
        async def run() -> T:
            return fn()
        return self._submit(run()).result(10)  # type: ignore[no-any-return]

    def stop(self) -> None:
        async def stop() -> None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

        try:
            self._submit(stop()).result(20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


StartStage = Callable[..., Running]


@pytest.fixture
def start_stage(mosquitto: MosquittoInstance, prefix: str, pool_of: PoolOf, tmp_path: Path) -> Iterator[StartStage]:
    running: list[Running] = []

    def start(conninfo: str | None = None, *, registry: Registry | None = None,
              alert_closed: AlertClosed | None = None, resend_open_s: float | None = None,
              **settings: Any) -> Running:
        """A running alert stage; with `conninfo`, on a pool of that database."""
        config = AlertConfig(broker_host=mosquitto.address.host, broker_port=mosquitto.address.port, prefix=prefix,
                             client_id=f"alerts-{uuid.uuid4().hex[:8]}",
                             journal_dir=tmp_path / "alerts", retry_s=0.2, **settings)
        stage = AlertStage(registry or small_registry(), config,
                           pool=None if conninfo is None else pool_of(conninfo), alert_closed=alert_closed,
                           resend_open_s=resend_open_s)
        run = Running(stage)
        running.append(run)
        return run

    yield start
    for run in running:
        if not run.loop.is_closed():
            run.stop()


@pytest.fixture
def handhelds(mosquitto: MosquittoInstance) -> Iterator[Callable[[str], Handheld]]:
    made: list[Handheld] = []

    def connect(topic_filter: str) -> Handheld:
        hh = Handheld(mosquitto, topic_filter)
        made.append(hh)
        return hh

    yield connect
    for hh in made:
        hh.close()
