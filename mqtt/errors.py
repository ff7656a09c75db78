"""Errors of the MQTT client."""

from __future__ import annotations

from trygg.errors import TryggError


class BrokerUnavailable(TryggError):
    """The MQTT broker refused or could not be reached at start (a TryggError: the CLI
    prints it as one line)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"cannot connect to MQTT broker {url}: {message}")
        self.url = url
