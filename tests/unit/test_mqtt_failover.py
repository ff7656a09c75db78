"""A client given several broker addresses (the MQTT listeners of a cluster's nodes) turns
to the next one when it cannot connect or loses its connection, at once, and delivers what
waited there. The brokers are a few lines of MQTT 3.1.1 on loopback sockets (CONNACK,
PUBACK), enough for the client's side of it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from mqtt import BrokerAddress, Client, Protocol
from mqtt.connection import FIRST_BACKOFF_S


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the time")


def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StubBroker:
    """Accepts MQTT 3.1.1 connections, acknowledges CONNECT and QoS 1 PUBLISH (unless told
    not to: a node whose stream has no leader), answers pings, and records the topics
    published; `drop()` closes every connection (the node died)."""

    def __init__(self, *, acknowledge: bool = True) -> None:
        self.acknowledge = acknowledge  # False: publishes are taken and never acknowledged
        self.topics: list[str] = []
        self.connects = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> BrokerAddress:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return BrokerAddress("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drop(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    self.connects += 1
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH, QoS 1: topic, packet id, payload
                    size = int.from_bytes(body[:2], "big")
                    self.topics.append(body[2:2 + size].decode())
                    if self.acknowledge:
                        writer.write(b"\x40\x02" + body[2 + size:4 + size])
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_a_client_connects_to_the_next_address_when_the_first_refuses() -> None:
    async def scenario() -> None:
        broker = StubBroker()
        second = await broker.start()
        client = Client([BrokerAddress("127.0.0.1", closed_port()), second], "c-1", protocol=Protocol.V311)
        async with client:  # waits for the broker: the first refused, the second answered
            assert client.address == second and client.connected.is_set()
            await asyncio.wait_for(client.publish("t/1", b"x", qos=1), 5)
        assert broker.topics == ["t/1"]
        await broker.stop()

    asyncio.run(scenario())


def test_a_lost_connection_moves_to_the_next_node_at_once_with_what_waited() -> None:
    async def scenario() -> None:
        first, second = StubBroker(), StubBroker()
        addresses = [await first.start(), await second.start()]
        client = Client(addresses, "c-2", protocol=Protocol.V311, wait=False)
        async with client:
            await asyncio.wait_for(client.publish("t/before", b"x", qos=1), 5)
            await first.stop()  # the node died: nothing listens there any more
            loop = asyncio.get_running_loop()
            lost = loop.time()
            await until(lambda: client.address == addresses[1])
            waiting = client.publish("t/after", b"y", qos=1)  # while it reconnects
            await asyncio.wait_for(waiting, 5)
            # the backoff's pause is for when every address failed, not before trying the next
            assert loop.time() - lost < 2 * FIRST_BACKOFF_S + 1
            assert client.connected.is_set() and client.generation == 2
        assert first.topics == ["t/before"] and second.topics == ["t/after"]
        await second.stop()

    asyncio.run(scenario())


def test_a_client_with_one_address_keeps_to_it() -> None:
    async def scenario() -> None:
        broker = StubBroker()
        address = await broker.start()
        client = Client(address, "c-3", protocol=Protocol.V311, wait=False)
        async with client:
            await asyncio.wait_for(client.publish("t/1", b"x", qos=1), 5)
            await broker.drop()
            await until(lambda: client.generation == 2)
            await asyncio.wait_for(client.publish("t/2", b"x", qos=1), 5)
            assert client.addresses == [address] and client.address == address
        assert broker.topics == ["t/1", "t/2"] and broker.connects == 2
        await broker.stop()

    asyncio.run(scenario())


def test_a_publish_left_unacknowledged_is_sent_again_on_the_next_node() -> None:
    """A node that keeps the connection and answers pings but never acknowledges an
    alert: after `ack_timeout_s` the client leaves it and the alert arrives at the next."""
    async def scenario() -> None:
        silent, second = StubBroker(acknowledge=False), StubBroker()
        addresses = [await silent.start(), await second.start()]
        states: list[tuple[bool, str]] = []
        client = Client(addresses, "c-4", protocol=Protocol.V311, keepalive=30, ack_timeout_s=0.5,
                        on_state=lambda up, why: states.append((up, why)))
        async with client:
            loop = asyncio.get_running_loop()
            sent = loop.time()
            await asyncio.wait_for(client.publish("t/alert", b"x", qos=1), 5)
            assert 0.5 <= loop.time() - sent < 2.5
            assert client.address == addresses[1] and client.generation == 2
        assert silent.topics == ["t/alert"] and second.topics == ["t/alert"]
        assert (False, "a publish unacknowledged for 0.5 s") in states
        await silent.stop()
        await second.stop()

    asyncio.run(scenario())


def test_without_an_ack_timeout_a_slow_acknowledgement_keeps_the_connection() -> None:
    async def scenario() -> None:
        silent = StubBroker(acknowledge=False)
        address = await silent.start()
        client = Client(address, "c-5", protocol=Protocol.V311, keepalive=4)
        async with client:
            waiting = client.publish("t/1", b"x", qos=1)
            await asyncio.sleep(1.5)
            assert not waiting.done() and client.generation == 1 and silent.connects == 1
        await silent.stop()

    asyncio.run(scenario())
