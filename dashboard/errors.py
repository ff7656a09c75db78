"""Errors of the dashboard. Each `ApiError` knows its HTTP status; the app turns it into
`{"detail": message}` (dashboard/app.py). Messages never carry a resident's data.

`AlertNotFound` and `IllegalTransition` are what an `AlertsPort` raises (the alerts
stage's own errors of the same names are handled the same way).
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from pydantic import BaseModel

#: The one body of every 404 about a resident or an alert, whether it does not exist or
#: the caller may not see it (docs/contract.md#6-http-api-and-pages).
NOT_FOUND: Final = "not found"
WRONG_LOGIN: Final = "wrong username or password"


class ErrorOut(BaseModel):
    """The body of every refusal: one message, no data."""

    detail: str


_MEANING: Final = {
    401: "Not signed in: no valid bearer token or session cookie",
    403: "The caller's role may never use this route",
    404: "Does not exist, or the caller may not see it (the two look the same)",
    409: "The object's state does not allow this step",
    503: "A part Trygg needs is not running or not reachable",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the refusals a route can give."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}


class DashboardError(Exception):
    """Base of the dashboard's errors."""


class ApiError(DashboardError):
    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAuthenticated(ApiError):
    """No valid token or session cookie (401)."""

    status = 401


class Forbidden(ApiError):
    """The caller's role may never use this route (403)."""

    status = 403


class NotFound(ApiError):
    """Does not exist, or the caller may not see it; the two look the same (404)."""

    status = 404

    def __init__(self, message: str = NOT_FOUND) -> None:
        super().__init__(message)


class Conflict(ApiError):
    """The request does not fit the object's state, e.g. an illegal alert transition (409)."""

    status = 409


class Unavailable(ApiError):
    """A part Trygg needs for this request is not running or not reachable (503)."""

    status = 503


class AuditJournalError(DashboardError):
    """An audit row could not be made durable in the local journal (dashboard/audit_journal.py):
    the request gets 503 and no data."""


class AlertNotFound(DashboardError):
    """Raised by an AlertsPort: no alert with this id."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id!r} not found")
        self.alert_id = alert_id


class IllegalTransition(DashboardError):
    """Raised by an AlertsPort: the lifecycle does not allow this step (the API answers 409)."""

    def __init__(self, alert_id: str, from_state: str, to_state: str) -> None:
        super().__init__(f"alert {alert_id!r} cannot go from {from_state} to {to_state}")
        self.alert_id = alert_id
        self.from_state = from_state
        self.to_state = to_state


def _stage_error(name: str) -> tuple[type[Exception], ...]:
    """The alerts stage's own error class `name`, if the stage is installed."""
    try:
        module = importlib.import_module("alerts.errors")
    except ImportError:
        return ()
    cls = getattr(module, name, None)
    return (cls,) if isinstance(cls, type) and issubclass(cls, Exception) else ()


#: What an AlertsPort may raise, from either package.
NOT_FOUND_ERRORS: Final[tuple[type[Exception], ...]] = (AlertNotFound, *_stage_error("AlertNotFound"))
ILLEGAL_ERRORS: Final[tuple[type[Exception], ...]] = (IllegalTransition, *_stage_error("IllegalTransition"))
NOT_READY_ERRORS: Final[tuple[type[Exception], ...]] = _stage_error("StageNotReady")


__all__ = [
    "ILLEGAL_ERRORS",
    "NOT_FOUND",
    "NOT_FOUND_ERRORS",
    "NOT_READY_ERRORS",
    "WRONG_LOGIN",
    "AlertNotFound",
    "ApiError",
    "AuditJournalError",
    "Conflict",
    "DashboardError",
    "ErrorOut",
    "Forbidden",
    "IllegalTransition",
    "NotAuthenticated",
    "NotFound",
    "Unavailable",
    "responses",
]
