"""`trygg processors` and `trygg alerts`: one stage per process.

`trygg up` runs every stage in one process and hands intents over in memory. Run apart,
the stages talk over the broker:

- `trygg gateway` validates and stores (and dead-letters) every event;
- `trygg processors` keeps a persistent session of its own on the device topics, runs
  the rules and publishes each intent (QoS 1) on `{prefix}/internal/intents`;
- `trygg alerts` keeps a persistent session on that topic and runs the alert stage; when
  staff resolve an alert it publishes `{prefix}/internal/alert-closed` so the rules re-arm.

A message is acknowledged to the broker once the stage has taken it (rules) or once the
intents are handed to the alert stage; a crash of the processors loses no rule input,
because on start it restores the newest snapshot and replays the events the gateway
stored after it.

Every connection logs in as an account of its own (`trygg-processors`,
`trygg-processors-out`, `trygg-alerts-in`, `trygg-alerts-out`, `trygg-alerts`:
gateway.BrokerAddress.account, deploy/mosquitto/acl) and uses TLS with an mqtts:// URL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

from alerts import AlertStage
from composition.app import restore_rules
from composition.runtime import Broker, open_database, open_registry, resolve_broker
from gateway import Validator
from mqtt import Client, Message, Subscriber
from processors import Processor, ProcessorStage
from storage import Pool
from trygg.contract import AlertKind, InvalidMessage, utcnow
from trygg.logging import get_logger
from trygg.pipeline import AlertIntent, intent_from_wire, intent_to_wire, internal_topic
from trygg.registry import Registry
from trygg.settings import Settings
from trygg.watchdog import watch_task

log = get_logger(__name__)


def _publisher(settings: Settings, broker: Broker, role: str) -> Client:
    """This stage's publisher, logged in as `<user>-<role>-out` (its own session)."""
    addr = broker.address.account(f"{role}-out")
    return Client(addr, addr.client_id(f"{settings.mqtt_client_id}-{role}-out-{uuid.uuid4().hex[:6]}"),
                  protocol=broker.protocol)


def _publish(out: Client, topic: str, payload: bytes) -> None:
    """Publish at QoS 1 from any thread (restore_rules runs on a worker thread): on the
    client's loop, now or soon. The client keeps the message until the broker's PUBACK,
    across reconnections."""

    def publish() -> None:
        out.publish(topic, payload, qos=1)

    out.call(publish)


def never() -> bool:
    """A stage's task is stopped by cancelling it: it is never asked to end otherwise."""
    return False


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _prepare(settings: Settings, pool: Pool, role: str,
                   stack: AsyncExitStack) -> tuple[Registry, Broker, Client]:
    """Registry, broker, and a publisher of this stage's own, connected
    (BrokerUnavailable) until `stack` closes."""
    registry = await asyncio.to_thread(open_registry, pool, settings)
    broker = await asyncio.to_thread(resolve_broker, settings)
    if broker.embedded is not None:
        stack.callback(broker.embedded.stop)  # last: after the connections to it are closed
    out = await stack.enter_async_context(_publisher(settings, broker, role))
    return registry, broker, out


async def _with_pool(settings: Settings, stage: Callable[[Settings, Pool], Awaitable[None]]) -> None:
    """Run a stage alone with the database pool this process opens for it."""
    pool = await asyncio.to_thread(open_database, settings)
    try:
        await stage(settings, pool)
    finally:
        await asyncio.to_thread(pool.close)


async def run_processors(settings: Settings) -> None:
    await _with_pool(settings, _run_processors)


async def _run_processors(settings: Settings, pool: Pool) -> None:
    stack = AsyncExitStack()
    registry, broker, out = await _prepare(settings, pool, "processors", stack)
    addr = broker.address.account("processors")
    topic = internal_topic(settings.mqtt_prefix, "intents")

    def publish(intents: list[AlertIntent]) -> None:
        for intent in intents:
            _publish(out, topic, json.dumps(intent_to_wire(intent)).encode())

    processor = Processor(registry, offline_debounce=timedelta(seconds=settings.offline_debounce_s))
    stage = ProcessorStage(processor, publish)
    await asyncio.to_thread(restore_rules, processor, pool, publish)
    validator = Validator(registry, settings.mqtt_prefix)
    loop = asyncio.get_running_loop()
    closed_topic = internal_topic(settings.mqtt_prefix, "alert-closed")

    def on_messages(messages: list[Message], generation: int) -> None:
        now = utcnow()
        for msg in messages:
            if msg.topic == closed_topic:
                try:
                    doc = json.loads(msg.payload)
                    closed = (str(doc["resident_id"]), AlertKind(doc["kind"]), doc.get("device_id"))
                except (ValueError, KeyError, TypeError) as exc:  # not from `trygg alerts`: skipped
                    log.error("unreadable_alert_closed_skipped", error=str(exc))
                    continue
                loop.call_soon_threadsafe(stage.alert_closed, *closed)
                continue
            try:
                item = validator.accept(msg.topic, msg.payload, now)
            except InvalidMessage:
                continue  # the gateway keeps it as a dead letter
            if item is not None:
                stage.sink(item)
        subscriber.ack([m.mid for m in messages if m.qos], generation)

    subscriber = Subscriber(
        addr, addr.client_id(f"{settings.mqtt_client_id}-processors"),
        [f"{settings.mqtt_prefix}/devices/+/events", f"{settings.mqtt_prefix}/devices/+/status", closed_topic],
        on_messages, protocol=broker.protocol, receive_maximum=settings.mqtt_receive_maximum)
    try:
        async with subscriber:
            log.info("processors_running", broker=broker.url, intents_topic=topic)
            async with asyncio.TaskGroup() as group:
                task = watch_task(group.create_task(stage.run(), name="processors"), never)
                await _until_signalled()
                task.cancel()
    finally:
        await stack.aclose()


class _ClosedOverBroker:
    """The `AlertClosed` port of `trygg alerts`: published (QoS 1) on
    `{prefix}/internal/alert-closed` for `trygg processors`."""

    def __init__(self, out: Client, topic: str) -> None:
        self._out = out
        self._topic = topic

    def alert_closed(self, resident_id: str, kind: AlertKind, device_id: str | None) -> None:
        doc: dict[str, Any] = {"resident_id": resident_id, "kind": str(kind), "device_id": device_id}
        _publish(self._out, self._topic, json.dumps(doc).encode())


async def run_alerts(settings: Settings) -> None:
    await _with_pool(settings, _run_alerts)


async def _run_alerts(settings: Settings, pool: Pool) -> None:
    stack = AsyncExitStack()
    registry, broker, out = await _prepare(settings, pool, "alerts", stack)
    closed = _ClosedOverBroker(out, internal_topic(settings.mqtt_prefix, "alert-closed"))
    alerts = AlertStage.from_settings(settings, registry, broker.address, protocol=broker.protocol,
                                      pool=pool, alert_closed=closed)
    loop = asyncio.get_running_loop()

    def on_messages(messages: list[Message], generation: int) -> None:
        intents = []
        for msg in messages:
            try:
                intents.append(intent_from_wire(json.loads(msg.payload)))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable_intent_skipped", error=str(exc))
        if intents:
            loop.call_soon_threadsafe(alerts.on_intents, intents)
        subscriber.ack([m.mid for m in messages if m.qos], generation)

    addr = broker.address.account("alerts-in")
    subscriber = Subscriber(addr, addr.client_id(f"{settings.mqtt_client_id}-alerts-in"),
                            [internal_topic(settings.mqtt_prefix, "intents")], on_messages, protocol=broker.protocol)
    try:
        async with asyncio.TaskGroup() as group:
            task = watch_task(group.create_task(alerts.run(), name="alerts"), never)
            await alerts.wait_ready()
            async with subscriber:
                log.info("alerts_running", broker=broker.url)
                await _until_signalled()
            task.cancel()
    finally:
        await stack.aclose()
