"""MQTT ingress: subscribe, validate, de-duplicate, dead-letter, make durable, hand on."""

from gateway.config import GatewayConfig
from gateway.dead_letters import DeadLetterLimits, DeadLetters, describe
from gateway.durable import DurableWriter, Pending
from gateway.errors import GatewayError, SpoolError
from gateway.ingress import Gateway
from gateway.recent import RecentKeys
from gateway.spool import Spool
from gateway.validate import DeviceEntry, Validator, device_index, location_basis_valid

__all__ = [
    "DeadLetterLimits",
    "DeadLetters",
    "DeviceEntry",
    "DurableWriter",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "Pending",
    "RecentKeys",
    "Spool",
    "SpoolError",
    "Validator",
    "describe",
    "device_index",
    "location_basis_valid",
]
