"""Alert delivery over MQTT (docs/design-notes.md "Where the alarm latency goes").

Each alert is published, QoS 1 and retained, on
``{prefix}/teams/{team_id}/alerts/{alert_id}`` for every team it reached (the
resident's team, then each escalation team). A resolved or cancelled alert is published
once more with its final state, *not* retained, and then an empty retained message
clears the topic: a handheld that is connected sees the final state (followed by an
empty message, which means "gone"), one that connects later sees nothing for it.

The publisher is an `mqtt.Client` on the alert stage's event loop: `publish` writes the
packet to the socket before it returns (no other thread to wake). A QoS 1 message is
kept until the broker acknowledges it (a future per message, done at its PUBACK); while
the broker is away messages wait, in order, and go out when it is back (the client
reconnects with a growing, jittered delay, and never has more in flight than the
broker's receive maximum). TCP_NODELAY is set on the socket (Nagle costs ~40 ms
stalls). With `tls` it connects over TLS (mqtt/connection.py); it logs in as an account
of its own (`trygg-alerts`: mqtt.BrokerAddress.account). After every (re)connect the
messages not yet acknowledged are sent again, then `on_connect` is called (on the loop)
so the stage can republish its unresolved alerts once those are acknowledged (`flush`)
— the broker may have lost its retained messages while it was down. With `failover`
addresses (the MQTT listeners of a NATS cluster's nodes) a lost connection is made
again to the next node (mqtt/connection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Final

from alerts import metrics
from alerts.model import Change
from mqtt import BrokerAddress, Client, Protocol, PublishRefused
from trygg.contract import alert_topic
from trygg.logging import get_logger

log = get_logger(__name__)

KEEPALIVE_S: Final = 30
#: an alert the broker has not acknowledged this long is sent again on a new connection
#: (to the next broker of a cluster): a broker may keep a connection up and never answer.
#: Longer than a NATS stream's leader election (4-9 s), during which every node is slow
#: to acknowledge: 5 s sent the publisher round the nodes, the dead one included.
ACK_TIMEOUT_S: Final = 15.0


class AlertPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "trygg/v1",
        client_id: str = "trygg-alerts",
        protocol: Protocol = Protocol.V5,
        username: str | None = None,
        password: str | None = None,
        on_connect: Callable[[], None] | None = None,
        tls: ssl.SSLContext | None = None,
        failover: Sequence[BrokerAddress] = (),
    ) -> None:
        """`failover`: further brokers, tried in turn when the connection is lost."""
        first = BrokerAddress(host, port, username, password, tls)
        self._client = Client([first, *failover], client_id, protocol=protocol, keepalive=KEEPALIVE_S, wait=False,
                              on_connect=self._connected, on_state=self._state, ack_timeout_s=ACK_TIMEOUT_S)
        self._prefix = prefix
        self._on_connect_cb = on_connect
        self._task: asyncio.Task[None] | None = None
        self._leave: asyncio.Future[None] | None = None

    @property
    def address(self) -> str:
        return self._client.url

    @property
    def connections(self) -> int:
        """Successful connections so far (1 after the first)."""
        return self._client.generation

    @property
    def connected(self) -> threading.Event:
        return self._client.connected

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._client.loop

    def start(self) -> None:
        """Start connecting (on the running loop); publishing may begin at once (kept)."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._leave = loop.create_future()
        self._task = loop.create_task(self._run(self._leave), name="alerts.mqtt")

    async def _run(self, leave: asyncio.Future[None]) -> None:
        async with self._client:
            await leave

    def topic(self, team_id: str, alert_id: str) -> str:
        return alert_topic(self._prefix, team_id, alert_id)

    def publish(self, change: Change) -> int:
        """Send the change to every team the alert reached; returns messages sent."""
        payload = change.alert.wire_payload()
        alert_id = change.alert.alert_id
        sent = 0
        for team in change.teams:
            topic = self.topic(team, alert_id)
            if change.final:
                self._send(topic, payload, retain=False)
                self._send(topic, b"", retain=True)  # clear the retained copy
                sent += 2
            else:
                self._send(topic, payload, retain=True)
                sent += 1
        return sent

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).add_done_callback(_refused)

    def pending(self) -> int:
        """QoS 1 messages not yet acknowledged by the broker."""
        return self._client.pending()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged everything sent so far (or `timeout_s`)."""
        return await self._client.flush(timeout_s)

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is waiting if the broker is there, then disconnect; not on the
        loop's thread."""
        loop, task = self._client.loop, self._task
        if task is None or loop is None or loop.is_closed():
            return
        self._task = None
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(task, timeout), loop).result(timeout + 2 * CLOSE_S)
        metrics.BROKER_UP.set(0)

    async def _stop(self, task: asyncio.Task[None], timeout_s: float) -> None:
        if self._client.connected.is_set():
            await self._client.flush(timeout_s)
        if self._leave is not None and not self._leave.done():
            self._leave.set_result(None)
        await task

    # ---------------------------------------------------------------- loop thread

    def _connected(self, session_present: bool) -> None:
        metrics.BROKER_UP.set(1)
        log.info("alert_publisher_connected", broker=self.address, connections=self.connections)
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb()
            except Exception:
                log.exception("alert_publisher_on_connect_callback_failed")

    def _state(self, up: bool, why: str) -> None:
        if not up:
            metrics.BROKER_UP.set(0)
            log.warning("alert_publisher_lost_broker", broker=self.address, reason=why)


#: how long leaving takes at most beyond the flush (DISCONNECT, a TLS close)
CLOSE_S: Final = 1.0


def _refused(future: asyncio.Future[None]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if isinstance(exc, PublishRefused):
        metrics.DELIVERIES_FAILED.labels("mqtt").inc()
        log.error("broker_refused_alert_message", topic=exc.topic, reason=exc.code)


__all__ = ["AlertPublisher"]
