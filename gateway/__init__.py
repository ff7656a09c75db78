"""MQTT ingress: subscribe, validate, de-duplicate, dead-letter, make durable, hand on."""

from gateway.durable import DurableWriter, Pending
from gateway.errors import BrokerUnavailable, GatewayError, SpoolError
from gateway.ingress import BrokerAddress, Gateway, device_index, set_nodelay
from gateway.spool import Spool

__all__ = [
    "BrokerAddress",
    "BrokerUnavailable",
    "DurableWriter",
    "Gateway",
    "GatewayError",
    "Pending",
    "Spool",
    "SpoolError",
    "device_index",
    "set_nodelay",
]
