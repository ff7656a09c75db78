"""Errors of the gateway."""

from __future__ import annotations

from trygg.errors import TryggError


class GatewayError(TryggError):
    """Base of gateway errors (a TryggError: the CLI prints it as one line)."""


class BrokerUnavailable(GatewayError):
    """The MQTT broker refused or could not be reached at start."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"cannot connect to MQTT broker {url}: {message}")
        self.url = url


class SpoolError(GatewayError):
    """The local spool cannot be written: events can no longer be made durable."""
