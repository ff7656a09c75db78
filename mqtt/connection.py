"""Trygg's MQTT client, on the asyncio loop of whoever uses it.

`Client` is one connection to the broker with one lifecycle:

    async with Client(address, "trygg-alerts") as client:   # connects (BrokerUnavailable)
        done = client.publish(topic, payload, qos=1)         # a Future, done at PUBACK
        await done
    # left: DISCONNECT sent, the socket closed

Inside the `async with` it reconnects by itself (jittered exponential backoff,
trygg.backoff), pings while idle, and drops a connection the broker stopped answering.
There is no thread inside the client: everything happens in the loop's callbacks, on an
asyncio `Protocol`, so a packet that arrives is handled in the callback that read it and
a packet written goes to the socket at once (`transport.write` sends before it returns
when nothing is buffered). On the loop of `trygg up` an alarm therefore travels
`data_received` → gateway → rules → alert publish → `transport.write` as one call chain on
one thread (docs/design-notes.md). Code that is not async gets a loop from
`mqtt.LoopThread`.

QoS 1 publishes are acknowledged through futures keyed by packet id; at most the
broker's receive maximum (CONNACK, MQTT 5) are in flight, the rest wait in order. After
a reconnection the unacknowledged ones are sent again: with DUP when the broker kept the
session (CONNACK session present), else as new messages. `on_connect(session_present)`
is called after each CONNACK, once that is done.

`Subscriber` adds subscriptions and incoming messages: by default a persistent session
(clean session 0 / clean start 0 with a session expiry) with QoS 1 subscriptions,
subscribed again whenever the broker lost the session; messages are handed over a
receive buffer at a time, and PUBACKs are written in batches by whoever made them durable
(`ack`, from any thread). Reading pauses while the durable writers are full
(back-pressure: the broker keeps the rest in the session).

With a TLS context (`BrokerAddress.tls`, from `tls_context`) the connection is MQTT over
TLS, the broker's certificate checked against the CA and its name against the host. A
certificate that fails the check ends the connection attempt like a refused one, with
one line that says why (`describe`), and Trygg does not start (`BrokerUnavailable`).

Nothing a packet holds may end a connection unless its bytes are not MQTT: asyncio drops
a connection whose `data_received` raises, and the broker would then redeliver the same
message into the same fault on every reconnect (83 reconnects a minute, nothing stored,
and no restart got as far as its SUBACK). `Client._received` therefore logs and counts
(`trygg_mqtt_receive_errors_total`) any other error and keeps the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from mqtt import metrics
from mqtt.address import BrokerAddress
from mqtt.errors import BrokerUnavailable, PublishRefused
from mqtt.tls import TlsRefused, describe, tls_context
from mqtt.wire import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PUBACK,
    SUBACK,
    Connack,
    Message,
    Protocol,
    ProtocolError,
    Will,
    connect_packet,
    parse_connack,
    parse_packets,
    parse_suback,
    puback_packets,
    publish_packet,
    subscribe_packet,
)
from trygg.backoff import Backoff
from trygg.logging import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
RECEIVE_BUFFER = 1 << 20
#: QoS 1 publishes in flight at most (the packet id space; less when the broker says so)
MAX_INFLIGHT = 65_535
#: how long a persistent session outlives its connection on the broker (MQTT 5)
SESSION_EXPIRY_S = 7 * 24 * 3600

Packets = list[tuple[int, bytes]]


class _Protocol(asyncio.Protocol):
    """One TCP connection of a `Client`; it reports everything to its owner."""

    def __init__(self, owner: Client) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[Connack] = asyncio.get_running_loop().create_future()
        #: done once the socket is closed (a TLS close takes a round trip: see `_close`)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # Nagle's algorithm costs ~40 ms stalls (docs/design-notes.md)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(ProtocolError(f"connection closed before CONNACK ({exc or 'EOF'})"))
        self.owner._connection_lost(self, exc)


@dataclass(slots=True)
class _Outgoing:
    """A QoS 1 publish until its PUBACK."""

    topic: str
    payload: bytes
    retain: bool
    future: asyncio.Future[None]
    mid: int = 0
    dup: bool = False  # sent before on a session the broker kept: again with DUP, same mid
    sent_at: float = 0.0  # time.monotonic() when last written


class Client:
    """An MQTT client connection (see the module doc). `publish`, `write` and the
    reading controls are for the loop's thread; `call` and `Subscriber.ack` for any.

    `wait=False`: entering does not wait for the broker; the client connects in the
    background (with backoff) and what is published meanwhile waits, in order.
    `on_state(up, why)` hears of every connection and loss.

    Given several addresses (the MQTT listeners of a cluster's nodes), it connects to
    the first; when a connection is lost or cannot be made it turns to the next, at
    once, and pauses (the backoff) only once each was tried since the last connection.
    """

    def __init__(
        self,
        address: BrokerAddress | Sequence[BrokerAddress],
        client_id: str,
        *,
        protocol: Protocol = Protocol.V5,
        keepalive: int = 30,
        clean: bool = True,
        session_expiry: int = 0,
        receive_maximum: int = 0,
        max_inflight: int = MAX_INFLIGHT,
        wait: bool = True,
        will: Will | None = None,
        on_connect: Callable[[bool], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        ack_timeout_s: float | None = None,
    ) -> None:
        #: the brokers to connect to, in turn (the nodes of a cluster): see `_next_address`
        self.addresses = [address] if isinstance(address, BrokerAddress) else list(address)
        if not self.addresses:
            raise ValueError("an MQTT client needs a broker address")
        self._at = 0
        self._tried = 0  # addresses given up on since the last connection
        self.address = self.addresses[0]
        self.client_id = client_id
        self.protocol = protocol
        self._connect_packets = [connect_packet(client_id, protocol, keepalive, a.username, a.password,
                                                session_expiry, receive_maximum, clean=clean, will=will)
                                 for a in self.addresses]
        self._keepalive = keepalive
        #: a QoS 1 publish not acknowledged this long ends the connection (and is sent
        #: again on the next, to the next address): see `_supervise`
        self._ack_timeout_s = ack_timeout_s
        self._max_inflight = max_inflight
        self._wait = wait
        self._on_connect = on_connect
        self._on_state = on_state or (lambda up, why: None)
        #: counts connections (CONNACKs); acknowledgements of an earlier one are not sent
        self.generation = 0
        #: set while connected (for other threads: `trygg up`'s health check, tests)
        self.connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: _Protocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._last_send = self._last_heard = 0.0
        self._inflight: OrderedDict[int, _Outgoing] = OrderedDict()
        self._resending: set[int] = set()  # ids of DUP messages waiting for room
        self._waiting: deque[_Outgoing] = deque()  # beyond the receive maximum, or while away
        self._quota = max_inflight
        self._next_mid = 0

    @property
    def url(self) -> str:
        return str(self.address)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    @property
    def in_flight(self) -> int:
        """QoS 1 publishes sent and not yet acknowledged."""
        return len(self._inflight)

    def pending(self) -> int:
        """QoS 1 publishes not yet acknowledged (in flight or waiting to be sent)."""
        return len(self._inflight) + len(self._waiting)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError(f"MQTT client {self.client_id} is already running")
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        if self._wait:
            while True:
                try:
                    await self._connect()
                    await self._ready()
                    break
                except (OSError, ProtocolError, TimeoutError) as exc:
                    await self._drop(disconnect=False)
                    url = self.url
                    if not self._next_address():  # each address tried once
                        raise BrokerUnavailable(url, str(exc) or type(exc).__name__) from exc
            self._tried = 0
        self._task = self._loop.create_task(self._supervise(), name=f"mqtt {self.client_id}")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close(disconnect=True)

    async def abort(self) -> None:
        """Leave without DISCONNECT, as a crash would (for tests); `async with` still
        ends normally afterwards."""
        await self._close(disconnect=False)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every QoS 1 publish made so far is acknowledged, or `timeout_s`;
        True when all were."""
        futures = [o.future for o in (*self._inflight.values(), *self._waiting)]
        if not futures:
            return True
        _, waiting = await asyncio.wait(futures, timeout=timeout_s)
        return not waiting

    # ------------------------------------------------------------------ loop thread

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> asyncio.Future[None]:
        """Send a message; the future is done once the broker has it: at its PUBACK for
        QoS 1 (failed with PublishRefused if the broker refused it), at once for QoS 0
        (dropped while the broker is away). A QoS 1 message is kept until acknowledged,
        also across reconnections; leaving the client cancels what is still waiting."""
        future = (self._loop or asyncio.get_running_loop()).create_future()
        if qos == 0:
            self.write(publish_packet(topic, payload, 0, self.protocol, retain=retain, qos=0))
            future.set_result(None)
            return future
        out = _Outgoing(topic, payload, retain, future)
        if self._waiting or self._protocol is None or len(self._inflight) >= self._quota:
            self._waiting.append(out)
        else:
            self._send(out)
        return future

    def write(self, data: bytes) -> bool:
        """Write to the current connection at once; False when there is none."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            return False
        protocol.transport.write(data)
        self._last_send = time.monotonic()
        return True

    def pause_reading(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.pause_reading()

    def resume_reading(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.resume_reading()

    # ------------------------------------------------------------------ any thread

    def call(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop's thread: now when called there, else soon."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _on_loop(loop):
            callback()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    # ------------------------------------------------------------------ subclasses

    async def _ready(self) -> None:
        """After the first CONNACK, before entering returns (a Subscriber's SUBACK)."""

    def _connected(self, session_present: bool) -> None:
        """After each CONNACK, before any packet that followed it is handled."""

    def _packets(self, messages: list[Message], others: Packets, generation: int) -> None:
        """Packets that arrived (other than CONNACK, PUBACK and DISCONNECT)."""

    def _disconnected(self, why: str) -> None:
        """The connection was lost (not when leaving)."""

    # ------------------------------------------------------------------ internals

    def _next_address(self) -> bool:
        """Turn to the next broker address (with one address: stay). True while this
        round has an address not yet tried since the last connection: the caller tries
        it at once; False once all were (the caller pauses, then starts again)."""
        if len(self.addresses) == 1:
            return False
        self._at = (self._at + 1) % len(self.addresses)
        self.address = self.addresses[self._at]
        self._tried += 1
        if self._tried >= len(self.addresses):
            self._tried = 0
            return False
        return True

    def _new_mid(self) -> int:
        while True:
            self._next_mid = self._next_mid % 65_535 + 1
            if self._next_mid not in self._inflight and self._next_mid not in self._resending:
                return self._next_mid

    def _send(self, out: _Outgoing) -> None:
        if not out.mid:
            out.mid = self._new_mid()
        self._inflight[out.mid] = out
        out.sent_at = time.monotonic()
        self.write(publish_packet(out.topic, out.payload, out.mid, self.protocol, retain=out.retain, dup=out.dup))

    def _pump(self) -> None:
        """Send what waits, in order, while the broker's receive maximum allows."""
        waiting = self._waiting
        while waiting and len(self._inflight) < self._quota and self._protocol is not None:
            out = waiting.popleft()
            if out.dup:
                self._resending.discard(out.mid)
            if not out.future.cancelled():
                self._send(out)

    def _acked(self, body: bytes) -> None:
        if len(body) < 2:
            return
        out = self._inflight.pop((body[0] << 8) | body[1], None)
        if out is None or out.future.done():
            return
        code = body[2] if len(body) > 2 and self.protocol == Protocol.V5 else 0
        if code >= 0x80:
            out.future.set_exception(PublishRefused(out.topic, code))
        else:
            out.future.set_result(None)

    def _resend(self, session_present: bool) -> None:
        """After a CONNACK: what was in flight goes again ahead of what waits, within the
        broker's (new) receive maximum: with DUP and its packet id if the broker kept the
        session, else as a new message."""
        again = list(self._inflight.values())
        self._inflight.clear()
        if not session_present:  # ids the old session knew mean nothing now
            self._resending.clear()
            for out in self._waiting:
                out.mid, out.dup = 0, False
        for out in reversed(again):  # in the order first sent
            if session_present:
                out.dup = True
                self._resending.add(out.mid)  # no other packet may take its id meanwhile
            else:
                out.mid, out.dup = 0, False
            self._waiting.appendleft(out)
        self._pump()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            try:
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.address.host, self.address.port, ssl=self.address.tls,
                    server_hostname=self.address.host if self.address.tls is not None else None)
            except ssl.SSLError as exc:  # an OSError: one line that says what to check
                raise TlsRefused(describe(exc)) from exc
            transport.write(self._connect_packets[self._at])
            try:
                await protocol.connack
            except BaseException:
                transport.abort()
                raise

    async def _supervise(self) -> None:
        """Reconnect after a loss (jittered exponential backoff); keepalive meanwhile.

        With `ack_timeout_s`, a broker that answers pings but leaves a QoS 1 publish
        unacknowledged that long is treated as lost too: MQTT 3.1.1 sends a publish
        again only on a new connection, and a NATS node whose stream had no leader
        (another node killed) kept an alert's PUBLISH unacknowledged, and so from the
        staff's handheld, for as long as the connection lasted."""
        backoff = Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        tick_s = self._keepalive / 4
        if self._ack_timeout_s is not None:
            tick_s = min(tick_s, self._ack_timeout_s / 4)
        while True:
            if self._protocol is None:
                try:
                    await self._connect()
                    backoff.reset()
                    self._tried = 0
                except (OSError, ProtocolError, TimeoutError) as exc:
                    self._on_state(False, str(exc) or type(exc).__name__)
                    if not self._next_address():  # a pause once every address was tried
                        await asyncio.sleep(backoff.next())
                continue
            self._lost.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick_s):
                    await self._lost.wait()
            now = time.monotonic()
            protocol = self._protocol
            if protocol is None:  # lost: the next address, after a pause when there is no other
                if not self._next_address():
                    await asyncio.sleep(backoff.next())
            elif now - self._last_heard > 1.5 * self._keepalive and protocol.transport is not None:
                protocol.transport.abort()  # the broker stopped answering pings
            elif self._unacknowledged_for(now) > (self._ack_timeout_s or math.inf) and protocol.transport is not None:
                self._on_state(False, f"a publish unacknowledged for {self._ack_timeout_s:g} s")
                protocol.transport.abort()
            elif now - self._last_send >= self._keepalive / 2:
                self.write(PINGREQ_PACKET)

    def _unacknowledged_for(self, now: float) -> float:
        """Seconds the oldest QoS 1 publish in flight has waited for its PUBACK (0: none)."""
        oldest = next(iter(self._inflight.values()), None)
        return 0.0 if oldest is None else now - oldest.sent_at

    async def _close(self, *, disconnect: bool) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop(disconnect=disconnect)
        for out in (*self._inflight.values(), *self._waiting):
            out.future.cancel()
        self._inflight.clear()
        self._waiting.clear()
        self._resending.clear()

    async def _drop(self, *, disconnect: bool) -> None:
        protocol, self._protocol = self._protocol, None
        self.connected.clear()
        if protocol is None or protocol.transport is None:
            return
        if disconnect:
            protocol.transport.write(DISCONNECT_PACKET)
            protocol.transport.close()
        else:
            protocol.transport.abort()
        # A TLS transport closes after the broker answers its close_notify: wait (a
        # little) so that a loop stopped next does not leave the socket open.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), CLOSE_TIMEOUT_S)

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        """Whatever arrived on `protocol`; raises nothing (see the module doc). Messages
        a handler failed on stay unacknowledged until the next connection."""
        try:
            self._handle(protocol, data)
        except Exception:
            metrics.RECEIVE_ERRORS.inc()
            log.exception("received_packets_error_connection_kept", broker=self.url)

    def _handle(self, protocol: _Protocol, data: bytes) -> None:
        buffer = protocol.buffer
        buffer += data
        try:
            messages, others, used = parse_packets(buffer, self.protocol)
        except Exception as exc:  # bytes that are not MQTT: nothing after them can be read
            self._fail(protocol, exc if isinstance(exc, ProtocolError) else ProtocolError(f"unreadable: {exc!r}"))
            return
        del buffer[:used]
        self._last_heard = time.monotonic()
        rest: Packets = []
        acked = False
        for first, body in others:
            kind = first >> 4
            if kind == PUBACK:
                self._acked(body)
                acked = True
            elif kind == CONNACK and not protocol.connack.done():
                if not self._connack(protocol, body):
                    return
            elif kind == DISCONNECT:
                self._fail(protocol, ProtocolError(f"broker disconnected us (reason {body[:1].hex() or '00'})"))
                return
            else:
                rest.append((first, body))
        if acked:
            self._pump()
        if protocol is self._protocol and (messages or rest):
            try:
                self._packets(messages, rest, self.generation)
            except ProtocolError as exc:
                self._fail(protocol, exc)

    def _connack(self, protocol: _Protocol, body: bytes) -> bool:
        try:
            connack = parse_connack(body, self.protocol)
        except ProtocolError as exc:
            self._fail(protocol, exc)
            return False
        if connack.code != 0:
            self._fail(protocol, ProtocolError(self._refused(connack.code)))
            return False
        self.generation += 1
        self._protocol = protocol
        self._last_send = self._last_heard
        self._quota = min(connack.receive_maximum, self._max_inflight)
        if connack.assigned_client_id:
            self.client_id = connack.assigned_client_id
        if connack.server_keepalive:
            self._keepalive = connack.server_keepalive
        self.connected.set()
        protocol.connack.set_result(connack)
        self._resend(connack.session_present)
        self._connected(connack.session_present)
        if self._on_connect is not None:
            try:
                self._on_connect(connack.session_present)
            except Exception:
                log.exception("mqtt_on_connect_callback_failed", broker=self.url)
        return True

    def _refused(self, code: int) -> str:
        """Why the broker's CONNACK refused us, as one line (usernames are no secret)."""
        why = _REFUSALS.get(code, "")
        who = f" as user {self.address.username}" if self.address.username else " without a username"
        return f"broker refused the connection{who}: {why or 'refused'} (code {code})"

    def _fail(self, protocol: _Protocol, exc: Exception) -> None:
        if not protocol.connack.done():
            protocol.connack.set_exception(exc)
        if protocol.transport is not None:
            protocol.transport.abort()

    def _connection_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # a connection that never got its CONNACK, or one already closed
        self._protocol = None
        self.connected.clear()
        why = str(exc) if exc else "broker closed the connection"
        self._on_state(False, why)
        self._disconnected(why)
        self._lost.set()


#: CONNACK codes that mean "who you are" (MQTT 3.1.1 and MQTT 5)
_REFUSALS = {4: "bad username or password", 5: "not authorised", 0x86: "bad username or password",
             0x87: "not authorised", 0x85: "client identifier not valid", 2: "client identifier not valid"}


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Subscriber(Client):
    """A client with subscriptions (see the module doc). `on_messages(batch, generation)`
    is called on the loop's thread with what one read of the socket held; QoS 1 messages
    stay unacknowledged until `ack(mids, generation)` (from any thread). Entering waits
    for the SUBACK too."""

    def __init__(
        self,
        address: BrokerAddress | Sequence[BrokerAddress],
        client_id: str,
        filters: Sequence[str],
        on_messages: Callable[[list[Message], int], None],
        *,
        qos: int = 1,
        protocol: Protocol = Protocol.V5,
        keepalive: int = 30,
        clean: bool = False,
        session_expiry: int = SESSION_EXPIRY_S,
        receive_maximum: int = 10_000,
        wait: bool = True,
        on_connect: Callable[[bool], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        ack_timeout_s: float | None = None,
    ) -> None:
        super().__init__(address, client_id, protocol=protocol, keepalive=keepalive, clean=clean,
                         session_expiry=0 if clean else session_expiry, receive_maximum=receive_maximum,
                         wait=wait, on_connect=on_connect, on_state=on_state)
        self._filters = list(filters)
        self._qos = qos
        self._on_messages = on_messages
        #: set while subscribed (for other threads)
        self.subscribed = threading.Event()
        self._suback: asyncio.Future[None] | None = None
        self._suback_mid = 0
        self._subscribed_once = False

    def ack(self, mids: Sequence[int], generation: int) -> None:
        """Acknowledge these QoS 1 messages of connection `generation` (those of an
        earlier connection are not: the broker sends them again)."""
        if not mids or generation != self.generation:
            return
        data = puback_packets(mids)
        self.call(lambda: self._ack(data, generation))

    def _ack(self, data: bytes, generation: int) -> None:
        if generation == self.generation:
            self.write(data)

    async def _ready(self) -> None:
        assert self._suback is not None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.shield(self._suback)
        except TimeoutError:
            raise TimeoutError("no SUBACK") from None

    def _connected(self, session_present: bool) -> None:
        self._suback = asyncio.get_running_loop().create_future()
        if session_present and self._subscribed_once:  # the broker kept the subscriptions
            self._subscribe_done()
            return
        self._suback_mid = self._new_mid()
        self.write(subscribe_packet(self._suback_mid, self._filters, self.protocol, self._qos))

    def _subscribe_done(self) -> None:
        self._subscribed_once = True
        self.subscribed.set()
        if self._suback is not None and not self._suback.done():
            self._suback.set_result(None)
        self._on_state(True, "subscribed")

    def _disconnected(self, why: str) -> None:
        self.subscribed.clear()

    async def _drop(self, *, disconnect: bool) -> None:
        self.subscribed.clear()
        await super()._drop(disconnect=disconnect)

    def _packets(self, messages: list[Message], others: Packets, generation: int) -> None:
        for first, body in others:
            if first >> 4 == SUBACK:
                mid, codes = parse_suback(body, self.protocol)  # ProtocolError: the connection ends
                if mid != self._suback_mid:
                    continue
                if any(c >= 0x80 for c in codes):
                    error = ProtocolError(f"broker refused the subscription {list(codes)}")
                    if self._suback is not None and not self._suback.done():
                        self._suback.set_exception(error)
                        self._suback.exception()  # retrieved: entering raises it, or nobody waits
                    raise error
                self._subscribe_done()
        if messages:
            self._on_messages(messages, generation)


__all__ = ["Client", "Subscriber", "TlsRefused", "describe", "tls_context"]
