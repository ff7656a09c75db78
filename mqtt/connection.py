"""Trygg's own MQTT clients, driven by an asyncio event loop.

`Connection` is one client connection: CONNECT, keepalive, and reconnection with
jittered exponential backoff, on an asyncio `Protocol`, so a packet that arrives is
handled in the loop's callback and a packet written goes to the socket at once
(`transport.write` sends before it returns when nothing is buffered). On the loop of
`trygg up`, an alarm therefore travels ingest → rules → alert publish as one call chain
on one thread, with no hand-over between threads (docs/design-notes.md).

`Subscriber` is the ingest side: a persistent session (clean session 0 / clean start 0
with a session expiry), QoS 1 subscriptions, incoming PUBLISH at QoS 0 and 1 handed
over a receive buffer at a time, and PUBACKs written in batches by whoever made the
messages durable (from any thread). Reading pauses while the durable writers are full
(back-pressure: the broker keeps the rest in the session). Without a loop of its own it
runs one on a thread, for `trygg gateway` and the stages run alone.

The alert publisher (alerts/publisher.py) and the alarm watch (gateway/alarm_watch.py)
are the other `Connection`s.

With `tls` (an `ssl.SSLContext`, from `tls_context`) the connection is MQTT over TLS,
the broker's certificate checked against the CA and its name against `host`. A
certificate that fails the check ends the connection attempt like a refused one, with
one line that says why (`describe`), and Trygg does not start (`BrokerUnavailable`).
Over TLS the socket is never read behind the transport's back (`read_now`): its bytes
are ciphertext only the transport can decrypt.

Nothing a packet holds may end a connection unless its bytes are not MQTT: asyncio drops
a connection whose `data_received` raises, and the broker would then redeliver the same
message into the same fault on every reconnect (issue 13: 83 reconnects a minute, nothing
stored, and no restart got as far as its SUBACK). `Connection._received` therefore logs
and counts (`trygg_mqtt_receive_errors_total`) any other error and keeps the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mqtt import metrics
from mqtt.errors import BrokerUnavailable
from mqtt.wire import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    MQTT5,
    MQTT311,
    PINGREQ_PACKET,
    SUBACK,
    Message,
    ProtocolError,
    connect_packet,
    parse_packets,
    puback_packets,
    subscribe_packet,
)
from trygg.logging import get_logger

log = get_logger("trygg.mqtt")

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
MAX_BACKOFF_S = 30.0
RECEIVE_BUFFER = 1 << 20
#: bytes `Connection.read_now` takes from the socket at most
READ_NOW_MAX = 1 << 16

Packets = list[tuple[int, bytes]]


class _Protocol(asyncio.Protocol):
    """One TCP connection of a `Connection`; it reports everything to its owner."""

    def __init__(self, owner: Connection) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.fd = -1  # the socket's descriptor, for `Connection.read_now`
        self.connack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: done once the socket is closed (a TLS close takes a round trip: see `close`)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # Nagle's algorithm costs ~40 ms stalls (DESIGN.md §9)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if self.owner.tls is None:  # TLS: only the transport may read (module doc)
                self.fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fd = -1
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(ProtocolError(f"connection closed before CONNACK ({exc or 'EOF'})"))
        self.owner._connection_lost(self, exc)


class Connection:
    """An MQTT client connection kept up by an asyncio loop (see the module doc).

    Subclasses implement `_connected` (after each CONNACK), `_packets` (whatever
    arrived), and may override `_disconnected`. Everything but `write_threadsafe` runs
    on the loop's thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        version: int = MQTT5,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        clean: bool = True,
        session_expiry: int = 0,
        receive_maximum: int = 0,
        on_state: Callable[[bool, str], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.version = version
        self.tls = tls
        self.username = username
        self._connect_packet = connect_packet(client_id, version, keepalive, username, password,
                                              session_expiry, receive_maximum, clean=clean)
        self._keepalive = keepalive
        self._on_state = on_state or (lambda up, why: None)
        #: counts connections (CONNACKs); acknowledgements of an earlier one are not sent
        self.generation = 0
        self.connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: _Protocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._last_send = self._last_heard = 0.0

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    # ------------------------------------------------------------------ loop thread

    async def open(self, *, wait: bool = True) -> None:
        """Connect now (raises OSError, ProtocolError, TimeoutError when `wait`), then
        keep the connection up in a task of its own until `close`."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        if wait:
            await self._connect()
        self._task = self._loop.create_task(self._supervise(), name=f"mqtt {self.url}")

    async def close(self, *, disconnect: bool = True) -> None:
        """Stop reconnecting; with `disconnect` say DISCONNECT, else drop the connection
        (as a crash would)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            if disconnect:
                protocol.transport.write(DISCONNECT_PACKET)
                protocol.transport.close()
            else:
                protocol.transport.abort()
            # A TLS transport closes after the broker answers its close_notify: wait (a
            # little) so that a loop stopped next does not leave the socket open.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), CLOSE_TIMEOUT_S)
        self.connected.clear()

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

    def read_now(self) -> None:
        """Handle at once what the socket already holds, without waiting for the loop.

        For work on the loop's thread that runs long (the gateway between the messages of
        a large read), so that an alarm which arrived meanwhile does not wait until that
        work is done. The bytes are read behind the transport's back: its next read finds
        nothing (or EOF again) and carries on. Nothing is read while reading is paused
        (back-pressure) or the connection is closing.
        """
        protocol = self._protocol
        if protocol is None or protocol.fd < 0:
            return
        transport = protocol.transport
        if transport is None or transport.is_closing() or not transport.is_reading():
            return
        try:
            data = os.read(protocol.fd, READ_NOW_MAX)
        except OSError:  # nothing there yet (BlockingIOError), or an error the transport will see
            return
        if data:
            self._received(protocol, data)

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

    def _connected(self) -> None:
        """After each CONNACK, before any packet that followed it is handled."""

    def _packets(self, messages: list[Message], others: Packets, generation: int) -> None:
        """Packets that arrived (other than CONNACK and DISCONNECT)."""

    def _disconnected(self, why: str) -> None:
        """The connection was lost (not after `close`)."""

    # ------------------------------------------------------------------ internals

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            try:
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None)
            except ssl.SSLError as exc:  # an OSError: one line that says what to check
                raise TlsRefused(describe(exc)) from exc
            transport.write(self._connect_packet)
            try:
                await protocol.connack
            except BaseException:
                transport.abort()
                raise

    async def _supervise(self) -> None:
        """Reconnect after a loss (jittered exponential backoff); keepalive meanwhile."""
        assert self._wake is not None
        delay = 0.5
        while not self._stopping:
            if self._protocol is None:
                try:
                    await self._connect()
                    delay = 0.5
                except (OSError, ProtocolError, TimeoutError) as exc:
                    self._on_state(False, str(exc) or type(exc).__name__)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._keepalive / 4)
            now = time.monotonic()
            protocol = self._protocol
            if protocol is None:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # lost: a pause first
            elif now - self._last_heard > 1.5 * self._keepalive and protocol.transport is not None:
                protocol.transport.abort()  # the broker stopped answering pings
            elif now - self._last_send >= self._keepalive / 2:
                self.write(PINGREQ_PACKET)

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        """Whatever arrived on `protocol`; raises nothing (see the module doc). Messages
        a handler failed on stay unacknowledged until the next connection."""
        try:
            self._handle(protocol, data)
        except Exception:
            metrics.RECEIVE_ERRORS.inc()
            log.exception("error handling received MQTT packets, connection kept", broker=self.url)

    def _handle(self, protocol: _Protocol, data: bytes) -> None:
        buffer = protocol.buffer
        buffer += data
        try:
            messages, others, used = parse_packets(buffer, self.version)
        except Exception as exc:  # bytes that are not MQTT: nothing after them can be read
            self._fail(protocol, exc if isinstance(exc, ProtocolError) else ProtocolError(f"unreadable: {exc!r}"))
            return
        del buffer[:used]
        self._last_heard = time.monotonic()
        rest: Packets = []
        for first, body in others:
            kind = first >> 4
            if kind == CONNACK and not protocol.connack.done():
                if len(body) < 2 or body[1] != 0:
                    self._fail(protocol, ProtocolError(self._refused(body[1] if len(body) > 1 else None)))
                    return
                self.generation += 1
                self._protocol = protocol
                self._last_send = self._last_heard
                self.connected.set()
                protocol.connack.set_result(None)
                self._connected()
            elif kind == DISCONNECT:
                self._fail(protocol, ProtocolError(f"broker disconnected us (reason {body[:1].hex() or '00'})"))
                return
            else:
                rest.append((first, body))
        if protocol is self._protocol and (messages or rest):
            try:
                self._packets(messages, rest, self.generation)
            except ProtocolError as exc:
                self._fail(protocol, exc)

    def _refused(self, code: int | None) -> str:
        """Why the broker's CONNACK refused us, as one line (usernames are no secret)."""
        why = _REFUSALS.get(code, "") if code is not None else ""
        who = f" as user {self.username}" if self.username else " without a username"
        return f"broker refused the connection{who}: {why or 'refused'} (code {code if code is not None else '?'})"

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
        if self._stopping:
            return
        why = str(exc) if exc else "broker closed the connection"
        self._on_state(False, why)
        self._disconnected(why)
        if self._wake is not None:
            self._wake.set()


#: CONNACK codes that mean "who you are" (MQTT 3.1.1 and MQTT 5)
_REFUSALS = {4: "bad username or password", 5: "not authorised", 0x86: "bad username or password",
             0x87: "not authorised", 0x85: "client identifier not valid", 2: "client identifier not valid"}


class TlsRefused(ConnectionError):
    """The TLS handshake with the broker failed (its certificate, most often)."""


def describe(exc: ssl.SSLError) -> str:
    """One line for a failed TLS handshake, naming what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate was refused ({str(exc.verify_message).rstrip('.')}); "
                "check the CA file (TRYGG_MQTT_CA_FILE) and the host name in the URL")
    return f"TLS handshake failed ({exc.reason or exc})"


def tls_context(ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the broker's certificate checked against
    `ca_file` (else the system's CAs) and its name against the host connected to; with
    `cert_file` (and `key_file`, unless the key is in it) a client certificate as well.
    Raises OSError (a file missing or unreadable) or ssl.SSLError (not PEM)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Subscriber(Connection):
    """The ingest subscriber (see the module doc). `on_messages(batch, generation)` is
    called on the loop's thread; `ack`, `start`, `stop`, `abort` from any other thread
    (`ack` also from the loop's)."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        filters: Sequence[str],
        on_messages: Callable[[list[Message], int], None],
        *,
        version: int = MQTT5,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        session_expiry: int = 7 * 24 * 3600,
        receive_maximum: int = 10_000,
        on_state: Callable[[bool, str], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, client_id, version=version, username=username, password=password,
                         keepalive=keepalive, clean=False, session_expiry=session_expiry,
                         receive_maximum=receive_maximum, on_state=on_state, tls=tls)
        self._filters = list(filters)
        self._on_messages = on_messages
        self._given_loop = loop
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()

    # ------------------------------------------------------------------ other threads

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe once (raises BrokerUnavailable), then keep it up."""
        loop = self._given_loop or self._own_loop()
        try:
            asyncio.run_coroutine_threadsafe(self.open(), loop).result(timeout)
        except (OSError, ProtocolError, TimeoutError, concurrent.futures.TimeoutError) as exc:
            self._stop_own_loop()
            raise BrokerUnavailable(self.url, str(exc) or type(exc).__name__) from exc
        if not self.subscribed.wait(timeout):
            raise BrokerUnavailable(self.url, "no SUBACK")

    def ack(self, mids: Sequence[int], generation: int) -> None:
        if not mids or generation != self.generation:
            return
        data = puback_packets(mids)
        self.call(lambda: self._ack(data, generation))

    def stop(self) -> None:
        """Disconnect cleanly (the session and its queued messages stay on the broker)."""
        self._close_from_outside(disconnect=True)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (like a crash, for tests)."""
        self._close_from_outside(disconnect=False)

    # ------------------------------------------------------------------ loop thread

    def _ack(self, data: bytes, generation: int) -> None:
        if generation == self.generation:  # else the broker redelivers on the new connection
            self.write(data)

    def _connected(self) -> None:
        self.write(subscribe_packet(1, self._filters, self.version))

    def _disconnected(self, why: str) -> None:
        self.subscribed.clear()

    def _packets(self, messages: list[Message], others: Packets, generation: int) -> None:
        for first, body in others:
            if first >> 4 == SUBACK:
                codes = body[2:] if self.version == MQTT311 else body[3 + body[2]:]
                if any(c >= 0x80 for c in codes):
                    raise ProtocolError(f"broker refused the subscription {list(codes)}")
                self.subscribed.set()
                self._on_state(True, "subscribed")
        if messages:
            self._on_messages(messages, generation)

    # ------------------------------------------------------------------ own loop

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        self._given_loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="trygg-mqtt-in", daemon=True)
        self._thread.start()
        return loop

    def _stop_own_loop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None or self._given_loop is None:
            return
        loop, self._given_loop = self._given_loop, None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    def _close_from_outside(self, *, disconnect: bool) -> None:
        loop = self._loop
        self.subscribed.clear()
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self.close(disconnect=disconnect), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(5)
        self._stop_own_loop()


__all__ = ["Connection", "Subscriber", "TlsRefused", "describe", "tls_context"]
