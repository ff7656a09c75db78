"""Errors of the gateway."""

from __future__ import annotations

from trygg.errors import TryggError


class GatewayError(TryggError):
    """Base of gateway errors (a TryggError: the CLI prints it as one line)."""


class SpoolError(GatewayError):
    """The local spool cannot be written: events can no longer be made durable."""
