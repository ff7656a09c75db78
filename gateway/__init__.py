"""MQTT ingress: subscribe, validate, de-duplicate, dead-letter, make durable, hand on."""

from gateway.config import GatewayConfig
from gateway.durable import DurableWriter, Pending
from gateway.errors import GatewayError, SpoolError
from gateway.ingress import Gateway
from gateway.spool import Spool
from gateway.validate import DeviceEntry, Validator, device_index, location_basis_valid

__all__ = [
    "DeviceEntry",
    "DurableWriter",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "Pending",
    "Spool",
    "SpoolError",
    "Validator",
    "device_index",
    "location_basis_valid",
]
