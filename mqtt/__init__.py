"""Trygg's MQTT client: the wire format (`mqtt.wire`, no I/O), the asyncio client
(`mqtt.connection`: `Client`, `Subscriber`) the gateway, alerts, simulators and
benchmarks use, and a loop on a thread (`LoopThread`) for code that is not async."""

from mqtt.address import BrokerAddress
from mqtt.connection import Client, Subscriber
from mqtt.errors import BrokerUnavailable, PublishRefused
from mqtt.loop_thread import LoopThread
from mqtt.tls import describe, tls_context
from mqtt.wire import Message, Protocol, Will

__all__ = ["BrokerAddress", "BrokerUnavailable", "Client", "LoopThread", "Message", "Protocol", "PublishRefused",
           "Subscriber", "Will", "describe", "tls_context"]
