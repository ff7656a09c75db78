"""Validation of one received message against the contract and the registry.

Used by the gateway (which stores and dead-letters) and by `trygg processors` run as a
process of its own (which only needs the valid events).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway import metrics
from trygg.contract import (
    SOURCE_KINDS,
    DeviceKind,
    Event,
    EventType,
    InvalidMessage,
    Reason,
    Topic,
    parse_event,
    parse_status,
    parse_topic,
)
from trygg.logging import get_logger
from trygg.pipeline import NO_EMERGENCIES, DeviceStatus, EmergencyState
from trygg.registry import Registry, Resident

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    resident_id: str
    kind: DeviceKind
    resident: Resident


def device_index(registry: Registry) -> dict[str, DeviceEntry]:
    return {d.id: DeviceEntry(r.id, d.device_kind, r) for r in registry.residents for d in r.devices}


def location_basis_valid(resident: Resident, at: datetime) -> bool:
    """A `location_basis` (consent or vedtak) valid on the resident's local date."""
    basis = resident.location_basis
    return basis is not None and basis.valid_on(at.astimezone(resident.zone).date())


class Validator:
    """`accept` returns the valid event or status, None for a position that may not be
    used (docs/contract.md#7-privacy-and-lawful-care), or raises InvalidMessage with the reason.

    `emergencies` tells whether a resident's alarm or fall alert is open: then their
    positions are used without a location basis (docs/privacy.md)."""

    def __init__(self, registry: Registry, prefix: str, emergencies: EmergencyState = NO_EMERGENCIES) -> None:
        self._prefix = prefix
        self._devices = device_index(registry)
        #: parsed topics of registered devices (a fleet's topics repeat every minute);
        #: at most two a device, renewed with the registry
        self._topics: dict[str, Topic] = {}
        self._emergencies = emergencies

    def set_registry(self, registry: Registry) -> None:
        # one assignment each, safe across threads: a cached topic is a parse of its
        # text alone, so an entry from either registry is still right
        self._devices = device_index(registry)
        self._topics = {}

    def accept(self, topic: str | bytes, payload: bytes, received_at: datetime) -> Event | DeviceStatus | None:
        if isinstance(topic, bytes):
            raise InvalidMessage(Reason.BAD_TOPIC, "topic is not UTF-8")
        where = self._topics.get(topic)
        if where is None:
            where = parse_topic(topic, self._prefix)
            if where.device_id in self._devices:
                self._topics[topic] = where
        entry = self._devices.get(where.device_id)
        if where.channel == "status":
            online = parse_status(payload)
            if entry is None:
                raise InvalidMessage(Reason.UNKNOWN_DEVICE, f"device {where.device_id!r} is not in the registry")
            return DeviceStatus(where.device_id, entry.resident_id, online, received_at)
        event = parse_event(where.device_id, payload, received_at)
        if entry is None:
            raise InvalidMessage(Reason.UNKNOWN_DEVICE, f"device {where.device_id!r} is not in the registry")
        if entry.kind not in SOURCE_KINDS[event.type]:
            raise InvalidMessage(Reason.WRONG_KIND, f"a {entry.kind.value} device cannot send {event.type.value}")
        event.resident_id = entry.resident_id
        if (event.type is EventType.LOCATION and not location_basis_valid(entry.resident, received_at)
                and not self._emergency(entry.resident_id)):
            metrics.LOCATIONS_DISCARDED.inc()
            return None
        return event

    def _emergency(self, resident_id: str) -> bool:
        """Whether an alarm/fall alert of the resident is open. If that cannot be told,
        the position is treated as having no basis: neither used nor stored, not even as
        a dead letter (docs/contract.md#7-privacy-and-lawful-care)."""
        try:
            return self._emergencies.emergency_open(resident_id)
        except Exception:
            log.exception("emergency_state_unknown_position_discarded")
            return False
