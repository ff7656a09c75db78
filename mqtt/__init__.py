"""Trygg's MQTT client: the wire format (`mqtt.wire`, no I/O) and the asyncio connection
(`mqtt.connection`) the gateway, alerts, simulators and benchmarks use."""

from mqtt.address import BrokerAddress
from mqtt.connection import Connection, Subscriber, tls_context
from mqtt.errors import BrokerUnavailable
from mqtt.wire import Message

__all__ = ["BrokerAddress", "BrokerUnavailable", "Connection", "Message", "Subscriber", "tls_context"]
