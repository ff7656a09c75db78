"""MQTT ingress: subscribe, validate, de-duplicate, dead-letter, make durable, hand on."""

from gateway.connection import Connection, Subscriber
from gateway.durable import DurableWriter, Pending
from gateway.errors import BrokerUnavailable, GatewayError, SpoolError
from gateway.ingress import BrokerAddress, Gateway, set_nodelay
from gateway.spool import Spool
from gateway.validate import DeviceEntry, Validator, device_index, location_basis_valid
from gateway.wire import Message

__all__ = [
    "BrokerAddress",
    "BrokerUnavailable",
    "Connection",
    "DeviceEntry",
    "DurableWriter",
    "Gateway",
    "GatewayError",
    "Message",
    "Pending",
    "Spool",
    "SpoolError",
    "Subscriber",
    "Validator",
    "device_index",
    "location_basis_valid",
    "set_nodelay",
]
