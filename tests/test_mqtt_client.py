"""Trygg's MQTT client against a real Mosquitto: QoS 1 publishes are acknowledged
through futures, never more are in flight than the broker takes, and what was not
acknowledged when the broker went down arrives once it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from mqtt import BrokerUnavailable, Client, Message, Protocol, Subscriber
from mqtt.address import BrokerAddress
from tests.fix_mqtt import MosquittoInstance

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(request: pytest.FixtureRequest) -> Iterator[MosquittoInstance]:
    """A Mosquitto of the test's own (it is restarted): `@pytest.mark.parametrize(
    "own_broker", [{"max_inflight": 5}], indirect=True)` configures it."""
    broker = MosquittoInstance(**getattr(request, "param", {}))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Inbox:
    """What a QoS 1 subscriber received, acknowledged at once."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.subscriber: Subscriber | None = None
        self.changed = asyncio.Event()

    def __call__(self, messages: list[Message], generation: int) -> None:
        self.payloads.extend(m.payload for m in messages)
        assert self.subscriber is not None
        self.subscriber.ack([m.mid for m in messages if m.qos], generation)
        self.changed.set()

    async def until(self, count: int, timeout_s: float = 20) -> set[bytes]:
        async with asyncio.timeout(timeout_s):
            while len(set(self.payloads)) < count:
                self.changed.clear()
                await self.changed.wait()
        return set(self.payloads)


def subscriber(address: BrokerAddress, topic: str, inbox: Inbox, protocol: Protocol = Protocol.V5) -> Subscriber:
    sub = Subscriber(address, f"sub-{uuid.uuid4().hex[:8]}", [topic], inbox, protocol=protocol)
    inbox.subscriber = sub
    return sub


def payloads(n: int) -> list[bytes]:
    return [b"m-%d" % i for i in range(n)]


@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
def test_each_publish_is_a_future_done_when_the_broker_acknowledged_it(
        mosquitto: MosquittoInstance, prefix: str, protocol: Protocol) -> None:
    topic = f"{prefix}/acks"

    async def run() -> None:
        inbox = Inbox()
        async with subscriber(mosquitto.address, topic, inbox, protocol), \
                Client(mosquitto.address, f"pub-{uuid.uuid4().hex[:8]}", protocol=protocol) as client:
            futures = [client.publish(topic, p, qos=1) for p in payloads(500)]
            async with asyncio.timeout(10):
                await asyncio.gather(*futures)
            assert client.pending() == 0
            assert await inbox.until(500) == set(payloads(500))
            assert await client.flush(1)

    asyncio.run(run())


@pytest.mark.parametrize("own_broker", [{"max_inflight": 5}], indirect=True)
def test_never_more_in_flight_than_the_broker_takes_and_the_rest_waits_in_order(
        own_broker: MosquittoInstance) -> None:
    """Mosquitto gives MQTT 5 clients its `max_inflight_messages` as their receive
    maximum (and drops a client that sends more)."""
    topic = "limit/t"

    async def run() -> None:
        inbox = Inbox()
        most = 0
        async with subscriber(own_broker.address, topic, inbox), \
                Client(own_broker.address, "pub-limit") as client:

            def look(_: object) -> None:
                nonlocal most
                most = max(most, client.in_flight)

            futures = []
            for p in payloads(300):
                futures.append(client.publish(topic, p, qos=1))
                futures[-1].add_done_callback(look)
                look(None)
            async with asyncio.timeout(10):
                await asyncio.gather(*futures)
            assert client.generation == 1, "the broker dropped the client (receive maximum exceeded)"
            assert await inbox.until(300) == set(payloads(300))
        assert most == 5
        assert inbox.payloads[:300] == payloads(300), "sent out of order"

    asyncio.run(run())


@pytest.mark.parametrize("own_broker", [{"persistence": True}], indirect=True)
def test_what_was_unacknowledged_when_the_broker_stopped_arrives_once_it_is_back(
        own_broker: MosquittoInstance) -> None:
    """A persistent session on both sides: after the restart the broker still has the
    publisher's session (session present), the client resends with DUP what was not
    acknowledged, and the subscriber gets every message (QoS 1: a copy may come twice;
    counted by payload)."""
    topic = "restart/t"

    async def run() -> None:
        inbox = Inbox()
        sub = Subscriber(own_broker.address, "sub-restart", [topic], inbox)
        inbox.subscriber = sub
        sessions: list[bool] = []
        client = Client(own_broker.address, "pub-restart", clean=False, session_expiry=3600,
                        on_connect=sessions.append)
        async with sub, client:
            futures = [client.publish(topic, p, qos=1) for p in payloads(20_000)]
            await asyncio.to_thread(own_broker.halt)
            unacknowledged = client.pending()
            assert unacknowledged > 0, "everything was acknowledged before the broker stopped: nothing tested"
            await asyncio.to_thread(own_broker.start)
            async with asyncio.timeout(30):
                await asyncio.gather(*futures)
            assert sessions == [False, True], "the broker did not keep the publisher's session"
            assert await inbox.until(20_000, timeout_s=30) == set(payloads(20_000))

    asyncio.run(run())


def test_a_subscriber_whose_session_is_gone_subscribes_again(own_broker: MosquittoInstance) -> None:
    """No persistence: the restarted broker knows neither session; the publisher's
    unacknowledged messages go again as new ones, and the subscriber subscribes again."""
    topic = "gone/t"

    async def run() -> None:
        inbox = Inbox()
        subscriptions: list[int] = []
        again = asyncio.Event()

        def on_state(up: bool, why: str) -> None:
            if why == "subscribed":
                subscriptions.append(sub.generation)
                if sub.generation > 1:
                    again.set()

        sub = Subscriber(own_broker.address, "sub-gone", [topic], inbox, on_state=on_state)
        inbox.subscriber = sub
        async with sub, Client(own_broker.address, "pub-gone", clean=False, session_expiry=3600) as client:
            await client.publish(topic, b"before", qos=1)
            await inbox.until(1)
            await asyncio.to_thread(own_broker.restart)
            async with asyncio.timeout(15):
                await again.wait()
            assert subscriptions == [1, 2]
            async with asyncio.timeout(10):
                await client.publish(topic, b"after", qos=1)
            assert await inbox.until(2) == {b"before", b"after"}

    asyncio.run(run())


def test_entering_without_a_broker_says_why_in_one_line() -> None:
    async def run() -> None:
        async with Client(BrokerAddress("127.0.0.1", 9), "nobody"):
            pass

    with pytest.raises(BrokerUnavailable, match=r"^cannot connect to MQTT broker mqtt://127\.0\.0\.1:9: .*failed"):
        asyncio.run(run())


@pytest.mark.parametrize("own_broker", [{"persistence": True}], indirect=True)
def test_publishes_made_before_the_broker_answers_go_out_in_order_once_it_does(
        own_broker: MosquittoInstance) -> None:
    """`wait=False`: entering does not wait; QoS 1 messages wait in order meanwhile and
    reach a subscriber whose persistent session the broker kept."""
    topic = "later/t"

    async def run() -> None:
        inbox = Inbox()
        sub = Subscriber(own_broker.address, "sub-later", [topic], inbox, clean=False)
        inbox.subscriber = sub
        async with sub:  # the session and its subscription exist before the broker stops
            pass
        await asyncio.to_thread(own_broker.halt)
        async with Client(own_broker.address, "pub-later", wait=False) as client:
            futures = [client.publish(topic, p, qos=1) for p in payloads(50)]
            await asyncio.to_thread(own_broker.start)
            async with asyncio.timeout(15):
                await asyncio.gather(*futures)
        async with sub:
            assert await inbox.until(50) == set(payloads(50))
        assert inbox.payloads[:50] == payloads(50), "sent out of order"

    asyncio.run(run())


@pytest.mark.parametrize("own_broker", [{"persistence": True}], indirect=True)
def test_a_smaller_receive_maximum_after_a_restart_is_kept_for_what_is_sent_again(
        own_broker: MosquittoInstance) -> None:
    """The broker comes back with room for 5 messages in flight: what was unacknowledged
    goes again with DUP 5 at a time (more would make the broker drop the client on every
    reconnect, and nothing would ever be acknowledged)."""
    topic = "smaller/t"

    async def run() -> None:
        inbox = Inbox()
        sub = Subscriber(own_broker.address, "sub-smaller", [topic], inbox)
        inbox.subscriber = sub
        most_after = 0
        client = Client(own_broker.address, "pub-smaller", clean=False, session_expiry=3600)
        async with sub, client:
            futures = [client.publish(topic, p, qos=1) for p in payloads(20_000)]
            await asyncio.to_thread(own_broker.halt)
            assert client.in_flight > 5, "too little in flight when the broker stopped: nothing tested"
            own_broker.conf.write_text(own_broker.conf.read_text().replace(
                "max_inflight_messages 1000", "max_inflight_messages 5"))
            await asyncio.to_thread(own_broker.start)

            def look(_: object) -> None:
                nonlocal most_after
                if client.generation >= 2:
                    most_after = max(most_after, client.in_flight)

            for future in futures:
                future.add_done_callback(look)
            async with asyncio.timeout(60):
                await asyncio.gather(*futures)
            assert client.generation == 2, "the broker dropped the client (receive maximum exceeded)"
            assert await inbox.until(20_000, timeout_s=30) == set(payloads(20_000))
        assert 0 < most_after <= 5

    asyncio.run(run())
