"""Errors of the gateway."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of gateway errors."""


class BrokerUnavailable(GatewayError):
    """The MQTT broker refused or could not be reached at start."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"cannot connect to MQTT broker {url}: {message}")
        self.url = url


class SpoolError(GatewayError):
    """The local spool cannot be written: events can no longer be made durable."""
