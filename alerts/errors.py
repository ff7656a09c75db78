"""Errors of the alerts package; each carries what it is about as attributes."""

from __future__ import annotations

from trygg.contract import AlertState


class AlertError(Exception):
    """Base of the alerts package's errors."""


class AlertNotFound(AlertError):
    """No alert with this id is known (neither unresolved nor recently closed)."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id!r} not found")
        self.alert_id = alert_id


class IllegalTransition(AlertError):
    """The lifecycle does not allow `from_state` → `to_state` (the API answers 409)."""

    def __init__(self, alert_id: str, from_state: AlertState, to_state: AlertState) -> None:
        super().__init__(f"alert {alert_id!r} cannot go from {from_state} to {to_state}")
        self.alert_id = alert_id
        self.from_state = from_state
        self.to_state = to_state


class SubscriptionDropped(AlertError):
    """A subscriber fell too far behind and was dropped; it should reconnect and re-list."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"subscription dropped after {backlog} undelivered alert changes")
        self.backlog = backlog


class StageNotReady(AlertError):
    """The alert stage is not running yet, or still restoring its alerts from storage."""


__all__ = ["AlertError", "AlertNotFound", "IllegalTransition", "StageNotReady", "SubscriptionDropped"]
