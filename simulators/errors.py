"""Errors the simulators raise on purpose; each carries its data as attributes."""

from __future__ import annotations

from pathlib import Path

from trygg.errors import TryggError


class SimulatorError(TryggError):
    """Base of the simulators' errors: a run that cannot start or cannot go on."""


class ClockError(SimulatorError):
    """A simulated clock whose events the gateway would refuse (docs/contract.md#3-events `ts` window)."""

    def __init__(self, message: str, *, start: str) -> None:
        super().__init__(message)
        self.start = start


class BrokerError(SimulatorError):
    """The MQTT broker cannot be reached or refused the connection."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{url}: {detail}")
        self.url = url
        self.detail = detail


class ScenarioError(SimulatorError):
    """A scenario file that does not load; `errors` lists `path: message` lines."""

    def __init__(self, path: Path | str, errors: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(errors))
        self.path = str(path)
        self.errors = errors


__all__ = ["BrokerError", "ClockError", "ScenarioError", "SimulatorError"]
