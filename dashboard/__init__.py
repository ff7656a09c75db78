"""The dashboard: FastAPI app with the staff console's API, the relatives' status, the
research API, administration, sign-in and the audit log (docs/contract.md#6-http-api-and-pages)."""

from dashboard.app import DashboardPools, create_app, open_pools
from dashboard.authz import Principal
from dashboard.deps import AlertFeed, AlertSource, AlertsPort, StageAlerts
from dashboard.errors import AlertNotFound, IllegalTransition

__all__ = ["AlertFeed", "AlertNotFound", "AlertSource", "AlertsPort", "DashboardPools", "IllegalTransition",
           "Principal", "StageAlerts", "create_app", "open_pools"]
