"""Errors of the MQTT client."""

from __future__ import annotations

from trygg.errors import TryggError


class BrokerUnavailable(TryggError):
    """The MQTT broker refused or could not be reached at start (a TryggError: the CLI
    prints it as one line)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"cannot connect to MQTT broker {url}: {message}")
        self.url = url


class PublishRefused(TryggError):
    """The broker acknowledged a QoS 1 publish with a failure reason (MQTT 5 PUBACK)."""

    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"broker refused the message on {topic} (reason {code:#04x})")
        self.topic = topic
        self.code = code
