"""The dashboard: FastAPI app with the staff console's API, the relatives' status, the
research API, administration, sign-in and the audit log (docs/contract.md#6-http-api-and-pages).

The names below are imported when first used, not with the package: a child process that
runs one job of a module here (a registry upload, an admin edit: trygg/isolated.py) must
not pay two seconds for FastAPI and the whole app before its job starts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard.app import DashboardPools, create_app, open_pools
    from dashboard.authz import Principal
    from dashboard.deps import AlertFeed, AlertSource, AlertsPort, StageAlerts
    from dashboard.errors import AlertNotFound, IllegalTransition

_HOMES = {
    "DashboardPools": "dashboard.app", "create_app": "dashboard.app", "open_pools": "dashboard.app",
    "Principal": "dashboard.authz",
    "AlertFeed": "dashboard.deps", "AlertSource": "dashboard.deps", "AlertsPort": "dashboard.deps",
    "StageAlerts": "dashboard.deps",
    "AlertNotFound": "dashboard.errors", "IllegalTransition": "dashboard.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = ["AlertFeed", "AlertNotFound", "AlertSource", "AlertsPort", "DashboardPools", "IllegalTransition",
           "Principal", "StageAlerts", "create_app", "open_pools"]
